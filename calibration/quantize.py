"""`hiergen quantize`: an fp32 model package -> a new package at fp16, int8-cpu or int8-qdq.

    quantize_package("models/default", "out/int8-cpu", Precision.INT8_CPU)

An offline transform that writes a new artifact in the same format (manifest,
fragments, one shared weights file): every fragment's precision and tensor
dtypes in the manifest, plus a `quantization` block with the source package's
SHA-256 (of its manifest.json, which hashes every file), the method, the ops
left in float32 and the calibration set. The runtime reads the precision from
the manifest; nothing else changes for it.

The flavours (docs/precision.md has the measurements):
- fp16: onnxruntime.transformers.float16; weights, activations and the KV
  caches (graph inputs/outputs, so the arenas are fp16) in float16;
  LayerNormalization, Softmax and the logits head in float32; the logits
  output stays float32 for the sampler; the VQ-VAE keeps its uint8/int64 IO.
- int8-cpu: per graph role, what measured fastest on ONNX Runtime's CPU
  provider (INT8_CPU_METHODS): "dynamic" (int8 per-channel weights,
  activations quantised per call: MatMulInteger) for the decode and step
  graphs, whose activations are a row or a few per sequence; "static" (Q/DQ,
  uint8 asymmetric activations from the calibration ranges, int8 per-channel
  weights) for the prefill graphs and the VQ-VAE, whose large activations
  made per-call quantisation cost more than it saved (and ONNX Runtime's
  dynamic quantiser leaves Convs in float). Its LayerNorm -> MatMul pairs
  are smoothed first (calibration/smooth.py; SMOOTHING).
- int8-qdq: static Q/DQ, int8 symmetric activations and weights (zero points
  0), per-channel weights: explicit quantisation as TensorRT 10's strongly
  typed networks and TensorRT 11 require; plus a calibration table per
  fragment (ORT's format) for ONNX Runtime's TensorRT EP running the fp32
  graphs with implicit INT8 (TensorRT 10 only).
In both int8 flavours only the weight MatMuls (QKV, output projection, MLP)
and the VQ-VAE's Convs are quantised. Float: the attention MatMuls
(scores and probabilities x values read the float KV caches), Softmax,
LayerNormalization, GELU, the residual Adds and the logits head (FLOAT_OPS).

Nothing half-written: the package is built in a temporary sibling folder and
renamed into place at the end; an error or an interrupt removes it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from hiergen.calibration.capture import DEFAULT_PROMPTS, SPLIT, calibration_prompts, capture, uncovered
from hiergen.calibration.smooth import smooth, smoothing_scales
from hiergen.runtime.manifest import Precision, PrecisionError
from hiergen.fileio import hash_file, temp_dir_beside
from hiergen.runtime.manifest import (FRAGMENTS, CalibrationSpec, FragmentSpec, Manifest, QuantizationSpec,
                                      TensorSpec, WeightsSpec)
from hiergen.runtime.package import open_package, sha256

# int8-cpu, per graph role: dynamic or static Q/DQ, whichever ran faster on ONNX Runtime's CPU provider in an
# interleaved `hiergen bench --compare` of all-dynamic against all-static packages (docs/precision.md, "int8-cpu:
# static or dynamic"): dynamic decode steps 1.07-1.58x fp32's against 0.94-1.18x static; static prefills
# faster than dynamic ones (interp batch 8: 287 against 394 ms). int8_cpu="dynamic" | "static" builds the
# all-one-method packages of that A/B.
INT8_CPU_METHODS = {"decode": "dynamic", "step": "dynamic", "prefill": "static", "encoder": "static",
                    "decoder": "static"}
INT8_CPU_METHOD = "mixed"
# LayerNorm -> MatMul smoothing's alpha per flavour (calibration/smooth.py), chosen on next-token agreement over
# 32 validation prompts (docs/precision.md, "Smoothing"): int8-cpu's per-call activation ranges gain from it
# (96.1% without, 96.7% at 0.5, 96.9% at 0.75); int8-qdq's fixed symmetric ranges lose (96.5, 96.3, 96.0).
SMOOTHING = {Precision.INT8_CPU: 0.75, Precision.INT8_QDQ: 0.0}
FLOAT_OPS = ("Softmax", "LayerNormalization", "Gelu", "attention MatMuls (activation x activation)", "logits head")
CALIBRATION_TABLES = "calibration"         # the int8-qdq package's folder of per-fragment TensorRT EP tables


class QuantizeInterrupted(KeyboardInterrupt):
    """Ctrl-C during `hiergen quantize`; the message says that nothing was written."""


def package_sha256(path: str | os.PathLike) -> str:
    """A package's identity: the SHA-256 of its manifest.json, which holds every file's SHA-256."""
    return sha256(Path(path) / "manifest.json")


def int8_cpu_method(role: str, int8_cpu: str) -> str:
    """"dynamic" or "static" for an int8-cpu graph of this role; the VQ-VAE's Convs are always static."""
    if role in ("encoder", "decoder"):
        return "static"
    return INT8_CPU_METHODS[role] if int8_cpu == "mixed" else int8_cpu


_DYNAMIC = "dynamic (int8 per-channel weights, activations quantised per call)"
_STATIC = "static Q/DQ (uint8 asymmetric activations, int8 per-channel weights)"


def method_of(precision: Precision, int8_cpu: str = INT8_CPU_METHOD, alpha: float = 0.0) -> str:
    roles = ("decode", "step", "prefill", "encoder", "decoder")
    smoothing = (f"; LayerNorm -> MatMul channels smoothed first (alpha {alpha:g})"
                 if precision.int8 and alpha else "")
    return {Precision.FP16: "fp16 (onnxruntime.transformers.float16), float32 where FLOAT_OPS",
            Precision.INT8_CPU: "; ".join(f"{r}: {_DYNAMIC if int8_cpu_method(r, int8_cpu) == 'dynamic' else _STATIC}"
                                          for r in roles),
            Precision.INT8_QDQ: "static Q/DQ: int8 symmetric activations and per-channel weights (zero points 0)"
            }[precision] + smoothing


def needs_calibration(precision: Precision) -> bool:
    """Both int8 flavours: static Q/DQ graphs need activation ranges (and int8-cpu's VQ-VAE Convs are static
    either way: ONNX Runtime's dynamic quantiser leaves Convs in float)."""
    return precision.int8


# ------------------------------------------------------------ graph helpers
def logits_head(proto, logits: str) -> list[str]:
    """Names of the nodes from the last MatMul(s) before the `logits` output to it: the head stays float."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    out, todo, seen = [], [logits], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        out.append(node.name)
        if node.op_type not in ("MatMul", "Gemm"):
            todo += list(node.input)
    return out


def activation_matmuls(proto) -> list[str]:
    """MatMuls whose B is no initializer (attention scores, probabilities x values): left in float."""
    inits = {t.name for t in proto.graph.initializer}
    return [n.name for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] not in inits]


def toposort(proto):
    """The graph's nodes in an order where every input is made before it is read (the ONNX checker's rule)."""
    nodes = list(proto.graph.node)
    made = {i.name for i in proto.graph.input} | {t.name for t in proto.graph.initializer} | {""}
    order, pending = [], list(range(len(nodes)))
    while pending:
        ready = [k for k in pending if all(i in made for i in nodes[k].input)]
        if not ready:
            raise ValueError(f"{proto.graph.name}: the graph has a cycle or an input nothing makes")
        for k in ready:
            made.update(nodes[k].output)
        order += [nodes[k] for k in ready]
        taken = set(ready)
        pending = [k for k in pending if k not in taken]
    del proto.graph.node[:]
    proto.graph.node.extend(order)
    return proto


def halve_exact_tables(proto) -> int:
    """Store as float16 the float32 lookup tables (read only by Gather/GatherND) whose every value float16 holds
    exactly (the additive attention masks: 0 and -1e4), with a Cast back to float32 after each lookup: the same
    outputs from half the bytes. Returns the bytes saved."""
    from onnx import TensorProto, helper, numpy_helper
    uses: dict[str, list] = {}
    for n in proto.graph.node:
        for i, x in enumerate(n.input):
            uses.setdefault(x, []).append((n, i))
    saved = 0
    for t in proto.graph.initializer:
        used = uses.get(t.name, [])
        if t.data_type != TensorProto.FLOAT or not used or any(
                n.op_type not in ("Gather", "GatherND") or i != 0 for n, i in used):
            continue
        a = numpy_helper.to_array(t)
        if a.nbytes < 1024 or not np.array_equal(a.astype(np.float16).astype(np.float32), a):
            continue
        t.CopyFrom(numpy_helper.from_array(a.astype(np.float16), t.name))
        saved += a.nbytes // 2
        for n, _ in used:
            out = n.output[0]
            n.output[0] = f"{out}_fp16"
            cast = helper.make_node("Cast", [n.output[0]], [out], to=TensorProto.FLOAT, name=f"{n.name}_to_fp32")
            nodes = list(proto.graph.node)
            proto.graph.node.insert(next(k for k, m in enumerate(nodes) if m is n or m == n) + 1, cast)
    return saved


_DTYPES = {1: "float32", 10: "float16", 7: "int64", 2: "uint8", 3: "int8", 9: "bool"}


def io_dtypes(proto) -> dict[str, str]:
    return {v.name: _DTYPES[v.type.tensor_type.elem_type] for v in list(proto.graph.input) + list(proto.graph.output)}


class FeedReader:
    """onnxruntime.quantization's CalibrationDataReader over captured feeds (only the graph's inputs)."""

    def __init__(self, feeds: list[dict], names: list[str]):
        self.items = [{k: f[k] for k in names} for f in feeds]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.items):
            return None
        self.i += 1
        return self.items[self.i - 1]

    def rewind(self):
        self.i = 0


# ------------------------------------------------------------ one fragment
def convert_fragment(src: Path, spec: FragmentSpec, precision: Precision, feeds: list[dict] | None,
                     work: Path, table_dir: Path | None = None, int8_cpu: str = INT8_CPU_METHOD,
                     scales: dict[str, np.ndarray] | None = None):
    """The fragment's graph at `precision` as an in-memory ModelProto (initializers inline). int8: `scales`
    (smoothing_scales' entry for the fragment's model) are folded in before quantisation."""
    import onnx
    path = src / spec.file
    proto = onnx.load(str(path))                               # with its external data from the package
    logits = spec.outputs[0].name if spec.kv_cache is not None else None
    head = logits_head(proto, logits) if logits else []
    if precision is Precision.FP16:
        from onnxruntime.transformers import float16
        keep = [logits] if logits else True                    # caches fp16; logits, tokens and frames as they are
        proto = float16.convert_float_to_float16(
            proto, keep_io_types=keep, op_block_list=float16.DEFAULT_OP_BLOCK_LIST + ["LayerNormalization", "Softmax"],
            node_block_list=head)
        return toposort(proto)               # the converter appends some of its Casts after their consumers
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    exclude = head + activation_matmuls(proto)
    if scales:
        smooth(proto, scales, set(head))
    out = work / spec.file
    inline = work / f"fp32_{spec.file}"
    onnx.save_model(proto, str(inline))                        # self-contained: the quantiser reads one file
    if precision is Precision.INT8_CPU and int8_cpu_method(spec.role, int8_cpu) == "dynamic":
        quantize_dynamic(str(inline), str(out), op_types_to_quantize=["MatMul"], per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                         extra_options={"MatMulConstBOnly": True})
        q = onnx.load(str(out))
        halve_exact_tables(q)
        return q
    qdq = precision is Precision.INT8_QDQ
    names = [t.name for t in spec.inputs]
    cache = work / f"{spec.name}.ranges.json"
    quantize_static(str(inline), str(out), FeedReader(feeds, names), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Conv"], per_channel=True,
                    activation_type=QuantType.QInt8 if qdq else QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": qdq, "WeightSymmetric": True},
                    calibration_cache_path=str(cache))
    if table_dir is not None:
        write_trt_table(cache, table_dir, spec.name)
    q = onnx.load(str(out))
    halve_exact_tables(q)
    return q


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice ("consider pre-processing") on the root logger for every graph."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def write_trt_table(ranges_json: Path, folder: Path, fragment: str) -> Path:
    """ONNX Runtime's TensorRT EP calibration table (its flatbuffers format, trt_int8_calibration_table_name)
    for one fragment's float tensors, from the calibration ranges quantize_static saved."""
    from onnxruntime.quantization.calibrate import load_tensors_data
    from onnxruntime.quantization.quant_utils import write_calibration_table
    ranges = dict(load_tensors_data(ranges_json).data)          # tensor name -> TensorData(lowest, highest)
    sub = folder / fragment
    sub.mkdir(parents=True, exist_ok=True)
    write_calibration_table(ranges, dir=str(sub))
    return sub / "calibration.flatbuffers"


# ------------------------------------------------------------ the package
def check_source(manifest: Manifest, src: Path) -> None:
    if manifest.quantization is not None or any(f.precision != "fp32" for f in manifest.fragments.values()):
        made = manifest.quantization
        raise PrecisionError(f"{src} is already quantised ({manifest.precision}"
                             + (f", made from the package with manifest SHA-256 {made.source_package_sha256[:12]}"
                                if made else "") + "): quantise the fp32 package it was made from")


def _refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force and not (out.is_dir() and not any(out.iterdir())):
        raise PrecisionError(f"{out} exists; pass --force to replace it, or choose another --out")


def quantize_package(src: str | os.PathLike, out: str | os.PathLike, precision: Precision | str,
                     prompts: list[str] | None = None, n_prompts: int = DEFAULT_PROMPTS, seed: int = 0,
                     keep: int = 24, force: bool = False, log: Callable[[str], None] | None = None,
                     int8_cpu: str = INT8_CPU_METHOD, smooth_alpha: float | None = None) -> Path:
    """Write package `out`: package `src` (fp32) at `precision`. prompts: the calibration captions (default:
    n_prompts drawn from the training split with `seed`). Raises PrecisionError / PackageError; an interrupt
    raises QuantizeInterrupted. Nothing is left at `out` (or beside it) unless the whole package was written.
    int8_cpu: "mixed" (INT8_CPU_METHODS), or "dynamic" / "static" for every transformer graph (the A/B).
    smooth_alpha: int8 only, the LayerNorm -> MatMul smoothing's alpha (calibration/smooth.py); None: the
    flavour's (SMOOTHING); 0: off."""
    precision = Precision.parse(precision) if isinstance(precision, str) else precision
    if int8_cpu not in ("mixed", "dynamic", "static"):
        raise PrecisionError(f"int8_cpu is 'mixed', 'dynamic' or 'static', not {int8_cpu!r}")
    if smooth_alpha is not None and not 0.0 <= smooth_alpha <= 1.0:
        raise PrecisionError(f"the smoothing alpha (--smooth) is between 0 (off) and 1, not {smooth_alpha}")
    if precision is Precision.FP32:
        raise PrecisionError("fp32 is the exported package itself: choose fp16, int8-cpu or int8-qdq")
    smooth_alpha = SMOOTHING.get(precision, 0.0) if smooth_alpha is None else smooth_alpha
    missing = [m for m in ("onnx", "onnxruntime.quantization") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        raise PrecisionError(f"hiergen quantize needs {', '.join(missing)}: pip install 'hiergen[train]'")
    import onnx

    from hiergen.export.package import SharedWeights, read_bytes     # onnx: imported once the check passed
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise PrecisionError(f"--out {out} is the source package: write the {precision.value} package elsewhere")
    manifest = open_package(src)
    check_source(manifest, src)
    _refuse_existing(out, force)
    say = log or (lambda s: None)
    calibration, samples, scales = None, {}, {}
    if needs_calibration(precision):
        if prompts is None:
            prompts = calibration_prompts(n_prompts, seed)
        if not prompts:
            raise PrecisionError(f"no calibration set: {precision.value} needs calibration prompts (training "
                                 "captions, one per line in --calibration-prompts, or --calibration N)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out)
    work = Path(tempfile.mkdtemp(prefix="hiergen-quantize-"))
    try:
        if needs_calibration(precision):
            say(f"calibration: generating {len(prompts)} training-split prompts through the runtime (seed {seed})")
            lacking = uncovered(prompts)
            if lacking:
                say(f"warning: no calibration prompt holds {', '.join(lacking)}; the static int8 ranges are "
                    "fitted without them, so prompts with these words may lose accuracy (add captions that "
                    "hold them)")
            samples = capture(src, prompts, seed, keep=keep)
            empty = [f for f in FRAGMENTS if not samples.get(f)]
            if empty:
                raise PrecisionError(f"the calibration set has no inputs for {', '.join(empty)}: calibrate with "
                                     "prompts that generate whole videos (training captions)")
            calibration = CalibrationSpec(SPLIT, seed, tuple(prompts), {f: len(samples[f]) for f in FRAGMENTS})
            if smooth_alpha:
                say(f"smoothing LayerNorm -> MatMul channels (alpha {smooth_alpha:g})")
                scales = smoothing_scales(_transformer_graphs(src, manifest), samples, smooth_alpha)
        weights = SharedWeights(tmp / manifest.weights.file)
        tables = tmp / CALIBRATION_TABLES if precision is Precision.INT8_QDQ else None
        fragments = {}
        for name in FRAGMENTS:
            spec = manifest.fragments[name]
            say(f"{name}: {precision.value}")
            with _quiet_root_logger():
                proto = convert_fragment(src, spec, precision, samples.get(name), work, tables, int8_cpu,
                                         scales.get(spec.model))
            read = read_bytes(proto)
            weight_bytes = weights.externalise(proto, int8=precision.int8)
            onnx.save_model(proto, str(tmp / spec.file))
            dtypes = io_dtypes(proto)
            fragments[name] = replace(
                spec, precision=precision.value, weight_bytes=weight_bytes, read_bytes=read,
                sha256=sha256(tmp / spec.file),
                inputs=tuple(TensorSpec(t.name, dtypes[t.name], t.shape) for t in spec.inputs),
                outputs=tuple(TensorSpec(t.name, dtypes[t.name], t.shape) for t in spec.outputs))
        weights.close()
        q = QuantizationSpec(precision=precision.value, source_package_sha256=package_sha256(src),
                             method=method_of(precision, int8_cpu, smooth_alpha), float_ops=FLOAT_OPS,
                             calibration=calibration, tables=_tables(tmp, tables))
        m = replace(manifest, fragments=fragments, quantization=q,
                    weights=WeightsSpec(weights.path.name, sha256(weights.path), weights.size, weights.referenced))
        (tmp / "manifest.json").write_text(json.dumps(m.to_dict(), indent=1) + "\n")
        _swap(tmp, out)
    except KeyboardInterrupt:
        raise QuantizeInterrupted(f"interrupted: nothing was written at {out}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _transformer_graphs(src: Path, manifest: Manifest) -> dict[str, tuple]:
    """{fragment: (model, fp32 ModelProto, its logits head's node names)} for every transformer graph."""
    import onnx
    out = {}
    for name, spec in manifest.fragments.items():
        if spec.kv_cache is not None:
            proto = onnx.load(str(src / spec.file))
            out[name] = (spec.model, proto, set(logits_head(proto, spec.outputs[0].name)))
    return out


def _tables(root: Path, tables: Path | None) -> dict[str, dict]:
    """fragment -> {"file", "sha256"} of each calibration table written under `tables`."""
    if tables is None or not tables.exists():
        return {}
    return {p.parent.name: {"file": str(p.relative_to(root)), "sha256": hash_file(p).hexdigest()}
            for p in sorted(tables.glob("*/calibration.flatbuffers"))}


def _swap(tmp: Path, out: Path) -> None:
    """At every moment `out` is the old package (or nothing) or the whole new one."""
    if out.exists():
        trash = out.with_name(f".{out.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        out.rename(trash)
        tmp.rename(out)
        shutil.rmtree(trash)
    else:
        tmp.rename(out)
