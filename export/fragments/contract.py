"""The fragment contract and the one function that exports a fragment to ONNX.

Exporter: torch.onnx.export(dynamo=True) at opset 20 (docs/export.md says why).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from hiergen.runtime.manifest import TensorSpec

OPSET = 20
_NP = {"uint8": np.uint8, "int64": np.int64, "float32": np.float32}


@dataclass(frozen=True)
class Contract:
    """Everything a runtime (or TensorRT builder) needs to know about one fragment.

    axes: symbolic axis -> (min, opt, max), the TensorRT optimisation profile;
    sample: symbolic axis -> the size used for the export trace. Sample sizes
    are >= 2 so the exporter cannot specialise an axis to 0/1.
    kv_cache: (past input, new output) pairs of a step graph: the runtime keeps
    each past tensor in its arena and writes the paired output into it at the
    step's slots along kv_slot_axis; kv_frame_local: the past inputs that hold
    one frame's block (text slots, then the frame's) instead of every slot;
    kv_window_local: past input -> layer parity, the inputs that hold one Swin
    window's block (hiergen/windows.py) instead of every slot.
    """
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    axes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    sample_axes: dict[str, int] = field(default_factory=dict)
    kv_cache: tuple[tuple[str, str], ...] = ()
    kv_slot_axis: int = 2
    kv_frame_local: tuple[str, ...] = ()
    kv_window_local: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for spec in self.inputs + self.outputs:
            for d in spec.shape:
                if isinstance(d, str) and d not in self.axes:
                    raise ValueError(f"{self.name}: {spec.name} uses axis {d!r} that has no profile")
        for a, (lo, opt, hi) in self.axes.items():
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"{self.name}: profile of {a!r} must satisfy 1 <= min <= opt <= max")
        for past, new in self.kv_cache:
            if past not in self.input_names or new not in self.output_names:
                raise ValueError(f"{self.name}: kv_cache pair ({past}, {new}) names no input/output")
        pasts = {past for past, _ in self.kv_cache}
        if not set(self.kv_frame_local) <= pasts or not {p for p, _ in self.kv_window_local} <= pasts:
            raise ValueError(f"{self.name}: kv_frame_local or kv_window_local names a tensor that is not a "
                             "kv_cache past input")

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def shape(self, spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)

    def profiles(self) -> dict[str, dict[str, list[int]]]:
        """{"min"|"opt"|"max": {input name: shape}}: the TensorRT optimisation profile."""
        return {level: {s.name: list(self.shape(s, {a: v[i] for a, v in self.axes.items()})) for s in self.inputs}
                for i, level in enumerate(("min", "opt", "max"))}

    def dynamic_shapes(self) -> tuple[dict, ...]:
        dims = {a: torch.export.Dim(a, min=lo, max=hi) for a, (lo, _, hi) in self.axes.items()}
        return tuple({i: dims[d] for i, d in enumerate(s.shape) if isinstance(d, str)} for s in self.inputs)

    def to_dict(self) -> dict:
        d = {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
             "profiles": self.profiles()}
        if self.kv_cache:
            d["kv_cache"] = {"pairs": [list(p) for p in self.kv_cache], "slot_axis": self.kv_slot_axis,
                             "frame_local": list(self.kv_frame_local),
                             "window_local": dict(self.kv_window_local)}
        return d


def export_fragment(module: torch.nn.Module, contract: Contract, sample: dict[str, torch.Tensor]) -> onnx.ModelProto:
    """Export `module` called with `sample` (input name -> tensor) to an ONNX model following `contract`."""
    args = tuple(sample[n] for n in contract.input_names)
    dynamic = contract.dynamic_shapes()
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):       # forward(a, b, *rest): torch.export wants rest as one tuple
        n = sum(p.kind == p.POSITIONAL_OR_KEYWORD for p in params)
        dynamic = (*dynamic[:n], dynamic[n:])
    with torch.no_grad():
        program = torch.onnx.export(module.eval(), args, dynamo=True, opset_version=OPSET,
                                    input_names=contract.input_names, output_names=contract.output_names,
                                    dynamic_shapes=dynamic, optimize=True, verbose=False)
    proto = program.model_proto
    proto.graph.name = contract.name
    got_in = [i.name for i in proto.graph.input]
    got_out = [o.name for o in proto.graph.output]
    assert got_in == contract.input_names and got_out == contract.output_names, (got_in, got_out)
    _set_symbolic_axes(proto, contract)
    _strip_debug_info(proto)
    return proto


def _strip_debug_info(proto: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces and source names (most of a graph file's bytes)."""
    for n in proto.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        del v.metadata_props[:]
        v.doc_string = ""
    for t in proto.graph.initializer:
        del t.metadata_props[:]
    del proto.graph.value_info[:]     # intermediate shapes: re-inferred by every runtime


def _set_symbolic_axes(proto: onnx.ModelProto, contract: Contract) -> None:
    """Name every dynamic dimension after the contract's axis (the exporter may call them s0, s1...)."""
    for vi, spec in zip(list(proto.graph.input) + list(proto.graph.output), contract.inputs + contract.outputs):
        dims = vi.type.tensor_type.shape.dim
        assert len(dims) == len(spec.shape), (spec.name, len(dims), spec.shape)
        for d, want in zip(dims, spec.shape):
            if isinstance(want, str):
                d.dim_param = want
            else:
                d.dim_value = want


def np_dtype(name: str):
    return _NP[name]
