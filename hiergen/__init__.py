"""hiergen: an edge runtime for hierarchical text-to-video transformers.

Importing hiergen never imports torch: the runtime, the CLI and the data tools
are torch-free; training and export live in hiergen.training / hiergen.export.
"""
__version__ = "0.1.0"
