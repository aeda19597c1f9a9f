"""The one precision enum of the reduced-precision builds (`hiergen quantize`, `hiergen build-engine`).

    Precision.parse("int8-cpu")     # Precision.INT8_CPU; an unknown name raises PrecisionError naming the choices

Its values are the manifest's per-fragment precision strings (runtime/manifest.py PRECISIONS): the runtime
learns a package's precision from its manifest, never from a file or folder name.
"""
from __future__ import annotations

from enum import Enum

from hiergen.errors import HiergenError
from hiergen.runtime.manifest import PRECISIONS


class PrecisionError(HiergenError, ValueError):
    """A precision this hiergen cannot build, or a package that cannot be built at it."""


class Precision(str, Enum):
    FP32 = "fp32"            # the exported reference
    FP16 = "fp16"            # fp16 weights, activations and KV caches; LayerNorm, softmax and the logits in fp32
    INT8_CPU = "int8-cpu"    # the fastest int8 form on ONNX Runtime's CPU provider (calibration/quantize.py)
    INT8_QDQ = "int8-qdq"    # symmetric int8 Q/DQ (zero points 0): TensorRT's explicit quantisation

    @classmethod
    def parse(cls, name: str) -> "Precision":
        try:
            return cls(name)
        except ValueError:
            built = ", ".join(p.value for p in cls if p is not cls.FP32)
            raise PrecisionError(f"unknown precision {name!r}: choose one of {built}") from None

    @property
    def int8(self) -> bool:
        return self in (Precision.INT8_CPU, Precision.INT8_QDQ)


assert tuple(p.value for p in Precision) == PRECISIONS
