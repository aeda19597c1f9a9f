"""Graph fragments: one module per fragment type, each declaring its contract in one place.

    contract  = vqvae_encoder.contract(vq_cfg)          # names, dtypes, symbolic shapes, profiles, sample
    module    = vqvae_encoder.graph(vq)                 # the torch.nn.Module that is exported
    proto     = export_fragment(module, contract)       # an onnx.ModelProto

The three transformer step graphs (t2i, keyframe, interp) are one fragment
type parameterised by `Kind` (fragments/step.py): same inputs, the video
models add the attention-plus caches.
"""
from hiergen.export.fragments.contract import OPSET, Contract, TensorSpec, export_fragment

__all__ = ["OPSET", "Contract", "TensorSpec", "export_fragment"]
