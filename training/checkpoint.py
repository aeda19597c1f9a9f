"""Checkpoints: one safetensors file holding the weights, the config and any extra state.

Layout of a checkpoint file (format "hiergen-checkpoint", version 1):
- tensors `model/<name>` : the model's state dict (parameters and buffers);
- tensors `extra/<n>`    : every tensor found inside `extra` (optimizer moments, RNG states);
- metadata (str -> str, in the safetensors header):
    format, version, kind         what wrote it ("vqvae", "transformer", ...)
    config_class, config          the frozen architecture dataclass, as JSON
    extra                         `extra` as JSON, tensors replaced by references
    sha256                        SHA-256 over every tensor's name, dtype, shape and bytes

The config travels with the weights, so a model is rebuilt from the file
alone (`config_class(**config)`). Files are written to a temporary sibling and
renamed into place, so a kill never leaves a half-written checkpoint under the
real name; a truncated or corrupted file fails the header parse or the hash
check on load with a `CheckpointError` that says what to do.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hiergen.errors import HiergenError
from hiergen.fileio import atomic_path

FORMAT, VERSION = "hiergen-checkpoint", 1
_MODEL, _EXTRA = "model/", "extra/"


class CheckpointError(HiergenError, ValueError):
    """A checkpoint that cannot be written or used; the message says what to do."""


@dataclass
class Checkpoint:
    path: Path
    kind: str
    config: Any                      # the config dataclass instance (or a dict when no class was given)
    model_state: dict[str, torch.Tensor]
    extra: dict[str, Any]


# ------------------------------------------------------------ extra state <-> JSON + tensors
def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors by references; keep int dict keys and tuples distinguishable in JSON."""
    if isinstance(obj, torch.Tensor):
        name = f"{_EXTRA}{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[k, _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} in checkpoint extra state; "
                          f"convert it to tensors, numbers, strings, lists or dicts")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def model_digest(model_state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes and bytes): which backbone a video model was trained on."""
    return _digest(model_state)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # Raw bytes whatever the dtype (bf16 has no numpy twin): view the storage as uint8.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def config_to_dict(config: Any) -> dict:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise CheckpointError(f"config must be a dataclass instance, got {type(config).__name__}")
    return dataclasses.asdict(config)


# ------------------------------------------------------------ save / load
def save(path: str | os.PathLike, model_state: dict[str, torch.Tensor], config: Any,
         extra: dict[str, Any] | None = None, kind: str = "model") -> Path:
    """Write a checkpoint atomically (temporary file + os.replace) and return its path."""
    path = Path(path)
    tensors = {_MODEL + k: v.detach().cpu().contiguous() for k, v in model_state.items()}
    extra_json = _flatten(extra or {}, tensors)
    meta = {
        "format": FORMAT, "version": str(VERSION), "kind": kind,
        "config_class": type(config).__name__,
        "config": json.dumps(config_to_dict(config)),
        "extra": json.dumps(extra_json),
        "sha256": _digest(tensors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    return path


def load(path: str | os.PathLike, config_class: type | None = None, kind: str | None = None,
         device: str | torch.device = "cpu") -> Checkpoint:
    """Read and verify a checkpoint; rebuild its config as `config_class` when given.

    Raises CheckpointError for a missing, truncated, corrupted or foreign file,
    or one whose kind or config does not match what the caller expects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or train one first "
                              f"(e.g. `hiergen train vqvae --out DIR`, which writes DIR/final.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({e}); the file is truncated or not a "
                              f"safetensors checkpoint: delete it and re-run the training (a resumed run "
                              f"restarts from the previous good checkpoint)") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a hiergen checkpoint (format {meta.get('format')!r}); "
                              f"pass a file written by hiergen training")
    if meta.get("version") != str(VERSION):
        raise CheckpointError(f"{path} has checkpoint version {meta.get('version')}, this hiergen reads "
                              f"version {VERSION}; re-train or use the hiergen that wrote it")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {meta.get('kind')!r} checkpoint, expected {kind!r}; "
                              f"pass the right file")
    if _digest(tensors) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupted (SHA-256 of its tensors does not match its "
                              f"header); delete it and re-run the training or copy it again")
    try:
        config_dict = json.loads(meta["config"])
        extra_json = json.loads(meta["extra"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has a damaged header ({e}); delete it and re-train") from e
    config: Any = config_dict
    if config_class is not None:
        if meta.get("config_class") != config_class.__name__:
            raise CheckpointError(f"{path} carries a {meta.get('config_class')} config, expected "
                                  f"{config_class.__name__}; pass a {meta.get('kind')} checkpoint of the "
                                  f"right model")
        config = config_from_dict(config_class, config_dict, path)
    model_state = {k[len(_MODEL):]: v.to(device) for k, v in tensors.items() if k.startswith(_MODEL)}
    extra = _unflatten(extra_json, tensors)
    return Checkpoint(path=path, kind=meta.get("kind", ""), config=config,
                      model_state=model_state, extra=extra)


def config_from_dict(config_class: type, d: dict, path: Any = "checkpoint") -> Any:
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise CheckpointError(f"{path}: config fields {unknown} are unknown to {config_class.__name__}; "
                              f"it was written by a newer hiergen -- upgrade, or re-train with this one")
    try:
        return config_class(**d)     # missing fields take their defaults
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its {config_class.__name__} is invalid ({e}); re-train") from e


def load_model_state(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load weights into `model` strictly, turning a mismatch into a CheckpointError."""
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[:4]
        raise CheckpointError(f"{ckpt.path} does not fit this model ({' '.join(first)}); build the model "
                              f"from the checkpoint's own config (checkpoint.config) or re-train") from e
