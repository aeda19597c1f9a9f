"""Validate a model package: manifest format, every file's SHA-256, ONNX full check, strict shape inference.

    check_package("models/default")      # raises PackageError saying what to do, or returns the manifest
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx

from hiergen.runtime.package import FIX, FRAGMENTS, PackageError, open_package  # noqa: F401  (re-exported)


def check_package(path: str | os.PathLike) -> dict:
    root = Path(path)
    m = open_package(root)
    for name in FRAGMENTS:
        frag = m["fragments"][name]
        f = str(root / frag["file"])
        try:
            onnx.checker.check_model(f, full_check=True)
            proto = onnx.load(f, load_external_data=False)
            onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise PackageError(f"{f} fails the ONNX check ({str(e).splitlines()[0]}): {FIX}") from None
        names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
        want = ([s["name"] for s in frag["inputs"]], [s["name"] for s in frag["outputs"]])
        if names != want:
            raise PackageError(f"{f} has inputs/outputs {names}, the manifest says {want}: {FIX}")
    return m
