"""The model package writer: ONNX fragments + one shared weights file + manifest.json.

    export_package("checkpoints/transformer", "checkpoints/vqvae/final.safetensors", "models/default")

Layout of a package (format "hiergen-package", version FORMAT_VERSION):
    manifest.json          configs, vocabulary, frame rates, plan, per fragment its contract + SHA-256
    weights.bin            every initializer of every fragment, each distinct tensor ONCE
    <fragment>.onnx        graphs only; initializers are ONNX external data pointing into weights.bin

Sharing: float initializers of >= INLINE_BELOW bytes are deduplicated by content (dtype, shape, bytes), so the
frozen backbone that the three step graphs hold in common is written once and
all three graphs reference the same offsets. (Names are not a reliable key:
the exporter's constant folding renames e.g. transposed weights.)
The package is built in a temporary sibling folder and renamed into place at
the end; an existing different package is only replaced with force=True.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from hiergen.config import Kind, ModelConfig
from hiergen.errors import HiergenError
from hiergen.fileio import temp_dir_beside
from hiergen.runtime.manifest import FragmentSpec, Manifest, WeightsSpec
from hiergen.runtime.package import FORMAT, FORMAT_VERSION, sha256
from hiergen.runtime.plan import Plan
from hiergen.tokenizer import TextTokenizer

if TYPE_CHECKING:      # torch stays out of `hiergen check`, which imports this module
    from hiergen.training.model import DualTransformer
    from hiergen.training.vqvae import VQVAE

WEIGHTS = "weights.bin"
_ALIGN = 64
INLINE_BELOW = 1024    # bytes; smaller tensors (norm biases, scalars) stay inside each graph


class ExportError(HiergenError, ValueError):
    """An export that cannot proceed; the message says what to do."""


# ------------------------------------------------------------ shared weights
class SharedWeights:
    """Appends distinct tensors to one file and points initializers at them."""

    def __init__(self, path: Path):
        self.path, self.index, self.size = path, {}, 0
        self.file = open(path, "wb")
        self.referenced = 0          # bytes of all initializers, before deduplication

    def externalise(self, proto: onnx.ModelProto, int8: bool = False) -> int:
        """Move the graph's large float (and with int8, int8/uint8: quantised weights) initializers into the
        shared file; returns all its initializer bytes."""
        total = 0
        for t in proto.graph.initializer:
            data = numpy_helper.to_array(t)
            total += data.nbytes
            shared = data.dtype.kind == "f" or int8 and data.dtype in (np.int8, np.uint8)
            if not shared or data.nbytes < INLINE_BELOW:
                continue    # shape operands (axes, sizes) must stay inline for shape inference; tiny ones too
            raw = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()
            key = hashlib.sha256(f"{t.data_type}:{list(t.dims)}:".encode() + raw).hexdigest()
            self.referenced += len(raw)
            if key not in self.index:
                pad = (-self.size) % _ALIGN
                self.file.write(b"\0" * pad + raw)
                self.index[key] = (self.size + pad, len(raw))
                self.size += pad + len(raw)
            offset, length = self.index[key]
            name, dtype, dims = t.name, t.data_type, list(t.dims)
            t.Clear()
            t.name, t.data_type = name, dtype
            t.dims.extend(dims)
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", WEIGHTS), ("offset", str(offset)), ("length", str(length))):
                e = t.external_data.add()
                e.key, e.value = k, v
        return total

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------ writer
def build_package(models: dict[Kind, DualTransformer], vq: VQVAE, tokenizer: TextTokenizer,
                  out: str | os.PathLike, force: bool = False, plan: Plan | None = None) -> Path:
    """Export in-memory models (one per Kind, sharing one backbone) and a VQ-VAE into package `out`."""
    from hiergen.export.fragments import step, vqvae_decoder, vqvae_encoder   # torch: only when exporting
    from hiergen.export.fragments.contract import OPSET, export_fragment

    out = Path(out)
    missing = [k.value for k in Kind if k not in models]
    if missing:
        raise ExportError(f"no {', '.join(missing)} model to export: train it first (hiergen train t2i|keyframe|interp)")
    cfg: ModelConfig = models[Kind.T2I].cfg
    if any(m.cfg != cfg for m in models.values()):
        raise ExportError("the t2i, keyframe and interp models have different configs: "
                          "the video models must be trained on the t2i backbone that is exported with them")
    if cfg.text_vocab != len(tokenizer.vocab) or cfg.image_vocab != vq.cfg.n_codes or cfg.grid != vq.cfg.grid:
        raise ExportError(f"model config {cfg} does not match the tokenizer ({len(tokenizer.vocab)} words) or "
                          f"the VQ-VAE ({vq.cfg.n_codes} codes, grid {vq.cfg.grid}): export the checkpoints "
                          "that were trained together")
    plan = plan or Plan()
    source = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_config": cfg.to_dict(),
              "vq_config": {**vars(vq.cfg), "widths": list(vq.cfg.widths)}, "vocab": list(tokenizer.vocab),
              "plan": plan.to_dict(), "source_sha256": _source_digest(models, vq)}
    _refuse_to_replace(out, source, force)      # before minutes of export, not after
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    try:
        weights = SharedWeights(tmp / WEIGHTS)
        jobs = [(vqvae_encoder.NAME, vqvae_encoder.contract(vq.cfg), vqvae_encoder.Graph(vq), vqvae_encoder.sample(vq.cfg)),
                (vqvae_decoder.NAME, vqvae_decoder.contract(vq.cfg), vqvae_decoder.Graph(vq), vqvae_decoder.sample(vq.cfg))]
        for k in Kind:
            jobs += [(step.name(k), step.contract(cfg, k), step.Graph(models[k].eval()), step.sample(cfg, k)),
                     (step.prefill_name(k), step.prefill_contract(cfg, k), step.PrefillGraph(models[k].eval()),
                      step.sample(cfg, k)),
                     (step.decode_name(k), step.decode_contract(cfg, k), step.DecodeGraph(models[k].eval()),
                      step.decode_sample(cfg, k))]
        fragments = {}
        for name, contract, graph, sample in jobs:
            proto = export_fragment(graph, contract, sample)
            read = read_bytes(proto)
            weight_bytes = weights.externalise(proto)
            onnx.save_model(proto, tmp / f"{name}.onnx")
            fragments[name] = FragmentSpec.from_dict(name, {
                "file": f"{name}.onnx", **contract.to_dict(), "precision": "fp32",
                "weight_bytes": weight_bytes,      # every initializer of the graph
                "read_bytes": read,                # what one run must read of them (hiergen bench)
                "sha256": sha256(tmp / f"{name}.onnx")})
        for k in Kind:                             # a step graph names its prefill and decode graphs
            fragments[step.name(k)] = replace(fragments[step.name(k)], prefill=step.prefill_name(k),
                                              decode=step.decode_name(k))
        weights.close()
        manifest = Manifest(
            format=FORMAT, format_version=FORMAT_VERSION, model_config=cfg, vq_config=source["vq_config"],
            vocab=tuple(tokenizer.vocab), plan=plan, source_sha256=source["source_sha256"], opset=OPSET,
            frame_rates=tuple(tokenizer.rates),
            weights=WeightsSpec(WEIGHTS, sha256(tmp / WEIGHTS), weights.size, weights.referenced),
            fragments=fragments)
        (tmp / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=1) + "\n")
        _replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


_GATHERS = {"Gather", "GatherND", "GatherElements"}


def read_bytes(proto: onnx.ModelProto) -> dict[str, int]:
    """The initializer bytes one run of a graph must read: {"fixed": ..., "per_sequence": ...}.

    A table that only Gathers read (embeddings, position and mask tables) costs one innermost row
    per sequence and use, not its size: a decode step looks up one row; every other initializer
    is read whole. hiergen bench adds the KV arena to get the bytes of a decode step.
    """
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, i))
    fixed = per_sequence = 0
    for t in proto.graph.initializer:
        data = numpy_helper.to_array(t)
        used = uses.get(t.name, [])
        if used and all(op in _GATHERS and i == 0 for op, i in used):
            per_sequence += len(used) * data.itemsize * (data.shape[-1] if data.ndim else 1)
        else:
            fixed += data.nbytes
    return {"fixed": fixed, "per_sequence": per_sequence}


def _source_digest(models, vq) -> str:
    """SHA-256 over every exported parameter: which weights a package was made from."""
    h = hashlib.sha256()
    for prefix, module in [(k.value, models[k]) for k in Kind] + [("vqvae", vq)]:
        for n, t in sorted(module.state_dict().items()):
            h.update(f"{prefix}.{n}:{t.dtype}:{list(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


_IDENTITY = ("format", "format_version", "model_config", "vq_config", "vocab", "plan", "source_sha256")


def _refuse_to_replace(out: Path, source: dict, force: bool) -> None:
    """An existing package made from the same weights and settings is rebuilt; anything else needs force."""
    if not out.exists() or force:
        return
    try:
        old = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        old = None
    if old is None and out.is_dir() and not any(out.iterdir()):
        return                                   # an empty folder
    if old is None or any(old.get(k) != source[k] for k in _IDENTITY):
        what = "a different model package" if old is not None else "something that is not a model package"
        raise ExportError(f"{out} holds {what}; pass --force (force=True) to replace it, or choose another --out")


def _replace(tmp: Path, out: Path) -> None:
    """Swap the finished package in: at every moment `out` is the old package or the new one."""
    if out.exists():
        trash = out.with_name(f".{out.name}.old")
        if trash.exists():
            shutil.rmtree(trash)
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash)
    else:
        tmp.rename(out)


def export_package(checkpoints_dir: str | os.PathLike, vqvae_ckpt: str | os.PathLike, out: str | os.PathLike,
                   force: bool = False, plan: Plan | None = None, keyframe: str | os.PathLike | None = None,
                   interp: str | os.PathLike | None = None) -> Path:
    """Export checkpoints/transformer/{t2i,keyframe,interp}.safetensors + the VQ-VAE into package `out`.

    `keyframe` / `interp` replace that video model's checkpoint (trained on the same backbone): the
    frame-by-frame baseline, an ablation's keyframe model, or the video models of another recipe.
    """
    from hiergen.training import checkpoint as ckpt
    from hiergen.training.model import load_model
    from hiergen.training.vqvae import VQVAE, VQVAEConfig

    d = Path(checkpoints_dir)
    paths = {k: d / f"{k.value}.safetensors" for k in Kind}
    for kind, path in ((Kind.KEYFRAME, keyframe), (Kind.INTERP, interp)):
        if path is not None:
            paths[kind] = Path(path)
    absent = [str(p) for p in paths.values() if not p.exists()]
    if absent:
        raise ExportError(f"missing checkpoint(s) {', '.join(absent)}: train them first (`hiergen train "
                          "t2i|keyframe|interp --tokens DIR --out CHECKPOINTS`) or pass --checkpoints")
    if not Path(vqvae_ckpt).exists():
        raise ExportError(f"missing VQ-VAE checkpoint {vqvae_ckpt}: train it first or pass --vqvae")
    backbone = d / "t2i.safetensors"
    models = {k: load_model(p, backbone) for k, p in paths.items()}
    wrong = [f"{paths[k]} holds a {m.kind.value} model" for k, m in models.items() if m.kind != k]
    if wrong:
        raise ExportError(f"{'; '.join(wrong)}, not the model its place needs")
    c = ckpt.load(vqvae_ckpt, VQVAEConfig, kind="vqvae")
    vq = VQVAE(c.config)
    ckpt.load_model_state(vq, c)
    vocab = ckpt.load(backbone, ModelConfig).extra.get("vocab")
    tok = TextTokenizer(tuple(vocab)) if vocab else TextTokenizer.default()
    return build_package(models, vq.eval(), tok, out, force, plan)
