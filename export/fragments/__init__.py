"""Graph fragments: one module per fragment type, each declaring its contract in one place.

    contract = vqvae_encoder.contract(vq.cfg)          # names, dtypes, symbolic shapes, min/opt/max profiles
    module   = vqvae_encoder.Graph(vq)                 # the torch.nn.Module that is exported
    proto    = export_fragment(module, contract, vqvae_encoder.sample(vq.cfg))   # an onnx.ModelProto

The transformer graphs (t2i, keyframe, interp) are fragment types
parameterised by `Kind` (fragments/step.py): a step graph (new tokens through
static KV caches), a prefill graph and a one-token decode graph each; the video
models add the attention-plus caches.
"""
from hiergen.export.fragments.contract import OPSET, Contract, TensorSpec, export_fragment

__all__ = ["OPSET", "Contract", "TensorSpec", "export_fragment"]
