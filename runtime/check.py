"""Validate a model package: manifest, every file's SHA-256, and each fragment loaded by ONNX Runtime.

    check_package("models/default")      # raises PackageError saying what to do, or returns a report

ONNX Runtime must load every fragment, and its inputs and outputs must be the
ones the manifest names. Where the `onnx` package is installed (hiergen[train])
the ONNX checker (full check) and strict shape inference run as well; the base
install has no `onnx`, and the report says the check was skipped.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from hiergen.runtime.manifest import FRAGMENTS
from hiergen.runtime.package import FIX, PackageError, open_package, verify_file


def _onnx_check(f: str) -> None:
    import onnx
    try:
        onnx.checker.check_model(f, full_check=True)
        proto = onnx.load(f, load_external_data=False)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise PackageError(f"{f} fails the ONNX check ({str(e).splitlines()[0]}): {FIX}") from None


def check_package(path: str | os.PathLike, onnx_checker: bool | None = None) -> dict:
    """A report {"path", "format", "format_version", "fragments", "checks", "manifest" (a Manifest)};
    raises PackageError.

    onnx_checker: run the ONNX checker too (default: where the onnx package is installed)."""
    import onnxruntime as ort

    root = Path(path)
    m = open_package(root)
    for table in (m.quantization.tables.values() if m.quantization else ()):   # int8-qdq: TensorRT EP tables
        verify_file(root, table["file"], table["sha256"])
    if onnx_checker is None:
        onnx_checker = importlib.util.find_spec("onnx") is not None
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL     # a load check, not a run
    for name in FRAGMENTS:
        frag = m.fragments[name]
        f = str(root / frag.file)
        if onnx_checker:
            _onnx_check(f)
        try:
            sess = ort.InferenceSession(f, so, providers=["CPUExecutionProvider"])
        except Exception as e:       # onnxruntime raises its own Fail/InvalidGraph/... types
            raise PackageError(f"ONNX Runtime cannot load {f} ({str(e).splitlines()[0]}): {FIX}") from None
        names = ([i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
        want = ([t.name for t in frag.inputs], [t.name for t in frag.outputs])
        if names != want:
            raise PackageError(f"{f} has inputs/outputs {names}, the manifest says {want}: {FIX}")
    checks = ["manifest", "sha256", "onnxruntime load"] + (["onnx checker", "shape inference"] if onnx_checker else [])
    return {"path": str(root), "format": m.format, "format_version": m.format_version, "precision": m.precision,
            "fragments": len(m.fragments), "checks": checks, "manifest": m}
