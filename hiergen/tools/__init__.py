"""Tools that compare the wings: `bench` (ONNX Runtime against the PyTorch reference, timed) and `parity`
(the same logits and tokens from both). They sit above runtime, training and export, which never import them."""
