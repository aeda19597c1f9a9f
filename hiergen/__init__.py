"""hiergen: an edge runtime for hierarchical text-to-video transformers.

Importing hiergen never imports torch: the runtime, the CLI and the data tools
are torch-free; training and export live in hiergen.training / hiergen.export.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    # `from hiergen import Pipeline` without importing onnxruntime for every CLI call.
    if name == "Pipeline":
        from hiergen.runtime.pipeline import Pipeline
        return Pipeline
    raise AttributeError(f"module 'hiergen' has no attribute {name!r}")
