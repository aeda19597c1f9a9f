"""hiergen.training"""
