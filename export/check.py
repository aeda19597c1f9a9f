"""Validate a model package: manifest format, every file's SHA-256, ONNX full check, strict shape inference.

    check_package("models/default")      # raises PackageError saying what to do, or returns the manifest
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import onnx

from hiergen.export.package import FORMAT, FORMAT_VERSION, FRAGMENTS, sha256

FIX = "re-run hiergen export to rebuild the package"


class PackageError(ValueError):
    """A package a runtime must not load; the message says how to fix it."""


def load_manifest(path: str | os.PathLike) -> dict:
    p = Path(path) / "manifest.json"
    try:
        m = json.loads(p.read_text())
    except OSError:
        raise PackageError(f"{path} is not a model package (no readable manifest.json): {FIX}") from None
    except ValueError as e:
        raise PackageError(f"{p} is not valid JSON ({e}): {FIX}") from None
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise PackageError(f"{p} has format {m.get('format')!r} format version {m.get('format_version')!r}; "
                           f"this hiergen reads {FORMAT!r} format version {FORMAT_VERSION}: {FIX} "
                           "with this hiergen version (or install the hiergen that wrote it)")
    missing = [f for f in FRAGMENTS if f not in m.get("fragments", {})]
    if missing:
        raise PackageError(f"{p} lists no fragment {', '.join(missing)}: {FIX}")
    return m


def _hash(root: Path, file: str, want: str) -> None:
    f = root / file
    if not f.is_file():
        raise PackageError(f"{f} is missing: {FIX}")
    got = sha256(f)
    if got != want:
        raise PackageError(f"{f} does not match its SHA-256 in the manifest (modified or corrupted): {FIX}")


def check_package(path: str | os.PathLike) -> dict:
    root = Path(path)
    m = load_manifest(root)
    _hash(root, m["weights"]["file"], m["weights"]["sha256"])
    for name in FRAGMENTS:
        frag = m["fragments"][name]
        _hash(root, frag["file"], frag["sha256"])
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
