"""The model packages shipped with hiergen (data only): `default` is what Pipeline.load() opens."""
