"""Reading a model package: manifest, format version and file hashes (no torch, no onnx).

Every runtime opens a package through `open_package`, which refuses one whose
format version or hashes do not match, with a message that says what to do.
`hiergen check` (runtime/check.py) also loads every fragment, and runs the ONNX checker where it is installed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from hiergen.errors import HiergenError
from hiergen.fileio import hash_file
from hiergen.runtime.manifest import FRAGMENTS, Manifest

FORMAT, FORMAT_VERSION = "hiergen-package", 5
FIX = ("reinstall hiergen for the shipped model, or rebuild the package with `hiergen export` "
       "(needs pip install 'hiergen[train]' and the checkpoints)")


class PackageError(HiergenError, ValueError):
    """A package a runtime must not load; the message says how to fix it."""


def sha256(path: str | os.PathLike) -> str:
    return hash_file(path).hexdigest()


def load_manifest(path: str | os.PathLike) -> Manifest:
    """The package's manifest, typed; format version and fragment list checked (files not: open_package)."""
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
    try:
        return Manifest.from_dict(m)
    except (KeyError, TypeError, ValueError) as e:
        raise PackageError(f"{p} is malformed ({type(e).__name__}: {e}): {FIX}") from None


def verify_file(root: Path, file: str, want: str) -> Path:
    f = root / file
    if not f.is_file():
        raise PackageError(f"{f} is missing: {FIX}")
    if sha256(f) != want:
        raise PackageError(f"{f} does not match its SHA-256 in the manifest (modified or corrupted): {FIX}")
    return f


def open_package(path: str | os.PathLike) -> Manifest:
    """The manifest of a package whose files are all present and unmodified."""
    root = Path(path)
    m = load_manifest(root)
    verify_file(root, m.weights.file, m.weights.sha256)
    for name in FRAGMENTS:
        verify_file(root, m.fragments[name].file, m.fragments[name].sha256)
    return m
