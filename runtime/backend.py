"""ONNX Runtime backend: step models and the VQ-VAE codec over a model package's fragments.

Tensor names come from the manifest, never from code. Execution providers are
chosen best-first (TensorRT, CUDA, CPU) or forced, with one log line saying
what runs where. The KV-cache arena is preallocated per generation stage and
the new keys/values of each step are written into it at their slots
(= position codes); nothing grows step by step.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("hiergen")

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
BACKENDS = ("auto",) + tuple(PROVIDERS)


class BackendError(ValueError):
    """A backend that cannot run here; the message says what to install or choose."""


def providers_for(backend: str) -> list[str]:
    available = ort.get_available_providers()
    if backend == "auto":
        return [p for p in PROVIDERS.values() if p in available]
    if backend not in PROVIDERS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if PROVIDERS[backend] not in available:
        hint = {"cuda": "pip install 'hiergen[gpu]' on a machine with an NVIDIA GPU",
                "tensorrt": "install TensorRT and onnxruntime-gpu built with it"}.get(backend, "")
        raise BackendError(f"backend {backend!r} is not available in this onnxruntime "
                           f"(it has {', '.join(available)}); {hint or 'use --backend auto'}")
    return [PROVIDERS[backend], "CPUExecutionProvider"] if backend != "cpu" else ["CPUExecutionProvider"]


def session(pkg: Path, spec: dict, providers: list[str], threads: int | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(pkg / spec["file"]), so, providers=providers)


class Arena:
    """One generation stage's preallocated KV cache and decode-step buffers, bound once through IO binding.

    kv holds every past tensor of the step graph (manifest kv_cache pairs) in one
    block, (n_pairs, B, ...) with each pair's tensor contiguous, so the graph
    reads it in place. A decode step (T = 1) fills the bound token/code buffers,
    runs, and copies the bound new keys/values into kv at its slot: nothing is
    allocated and nothing grows. A prefill (T > 1) runs once per stage and lets
    ONNX Runtime allocate its outputs.
    """

    def __init__(self, model: "OrtStepModel", batch: int):
        self.batch = batch
        self.written = False                           # no step has run: a prefill can skip the cache
        past_shape = [batch if d == "batch" else d for d in model.past_shape]
        new_shape = [batch if d == "batch" else 1 if d == "new_tokens" else d for d in model.new_shape]
        n = len(model.pairs)
        self.kv = np.zeros((n, *past_shape), np.float32)
        self.new = np.zeros((n, *new_shape), np.float32)
        self.logits = np.zeros((batch, 1, model.image_vocab), np.float32)
        self.tokens = np.zeros((batch, 1), np.int64)
        self.codes = np.zeros((batch, 1), np.int64)
        self.slot_axis = 1 + model.slot_axis           # in kv, after the pair axis
        io = model.sess.io_binding()
        for arr, name in ((self.tokens, model.tokens_name), (self.codes, model.codes_name)):
            _bind(io.bind_input, name, arr)
        _bind(io.bind_output, model.logits_name, self.logits)
        for i, (past, new) in enumerate(model.pairs):
            _bind(io.bind_input, past, self.kv[i])
            _bind(io.bind_output, new, self.new[i])
        self.decode = io

    def past_feeds(self, model: "OrtStepModel") -> dict[str, np.ndarray]:
        return {past: self.kv[i] for i, (past, _) in enumerate(model.pairs)}

    def write(self, slots, new: np.ndarray) -> None:
        """new (n_pairs, B, ..., T, ...) -> kv at `slots` (an int for one slot, else an index array)."""
        index = (slice(None),) * self.slot_axis + (slots,)
        self.kv[index] = new if not isinstance(slots, int) else new[(slice(None),) * self.slot_axis + (0,)]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.kv, self.new, self.logits, self.tokens, self.codes))


def _bind(bind, name: str, arr: np.ndarray) -> None:
    assert arr.flags.c_contiguous, name
    bind(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)


class OrtStepModel:
    """StepModel (runtime/orchestrator.py) over one exported transformer step graph; caches are Arenas."""

    def __init__(self, pkg: Path, manifest: dict, name: str, providers: list[str], threads: int | None = None):
        spec = manifest["fragments"][name]
        cfg = manifest["model_config"]
        self.name = name
        self.sess = session(pkg, spec, providers, threads)
        pre = spec.get("prefill")
        self.prefill = session(pkg, manifest["fragments"][pre], providers, threads) if pre else None
        self.tokens_name, self.codes_name = spec["inputs"][0]["name"], spec["inputs"][1]["name"]
        self.logits_name = spec["outputs"][0]["name"]
        self.pairs = [tuple(p) for p in spec["kv_cache"]["pairs"]]
        self.slot_axis = spec["kv_cache"]["slot_axis"]
        shapes = {t["name"]: t["shape"] for t in spec["inputs"] + spec["outputs"]}
        self.past_shape, self.new_shape = shapes[self.pairs[0][0]], shapes[self.pairs[0][1]]
        self.new_names = [new for _, new in self.pairs]
        self.text_len, self.grid, self.image_vocab = cfg["text_len"], cfg["grid"], cfg["image_vocab"]
        # IO binding hands ONNX Runtime host pointers; on another device it would copy the
        # arena every step, so there the plain run() path is used (see docs/runtime.md).
        self.bound = self.sess.get_providers()[0] == "CPUExecutionProvider"

    def new_cache(self, batch: int) -> Arena:
        return Arena(self, batch)

    def step(self, tokens: np.ndarray, codes: np.ndarray, cache: Arena) -> np.ndarray:
        """Logits (B, T, V); for a decode step they live in the arena until the next step."""
        if tokens.shape == (cache.batch, 1) and self.bound:
            cache.tokens[...] = tokens
            cache.codes[...] = codes
            self.sess.run_with_iobinding(cache.decode)
            cache.written = True
            cache.write(int(codes[0, 0]), cache.new)
            return cache.logits
        feeds = {self.tokens_name: tokens, self.codes_name: codes}
        if cache.written or self.prefill is None:
            out = self.sess.run([self.logits_name, *self.new_names], {**feeds, **cache.past_feeds(self)})
        else:
            out = self.prefill.run([self.logits_name, *self.new_names], feeds)
        cache.written = True
        slots = codes[0]                       # every sequence of a step writes the same slots
        cache.write(int(slots[0]) if len(slots) == 1 else slots, np.stack(out[1:]))
        return out[0]


class OrtCodec:
    """The VQ-VAE fragments: uint8 RGB frames <-> int64 tokens."""

    def __init__(self, pkg: Path, manifest: dict, providers: list[str], threads: int | None = None):
        enc, dec = manifest["fragments"]["vqvae_encoder"], manifest["fragments"]["vqvae_decoder"]
        self.enc, self.dec = session(pkg, enc, providers, threads), session(pkg, dec, providers, threads)
        self.enc_in, self.dec_in = enc["inputs"][0]["name"], dec["inputs"][0]["name"]
        self.image_size = manifest["vq_config"]["image_size"]

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self.dec.run(None, {self.dec_in: np.ascontiguousarray(tokens, np.int64)})[0]

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return self.enc.run(None, {self.enc_in: np.ascontiguousarray(frames, np.uint8)})[0]
