"""ONNX Runtime backend: step models and the VQ-VAE codec over a model package's fragments.

Tensor names come from the manifest, never from code. Execution providers are
chosen best-first (TensorRT, CUDA, CPU) or forced, with one log line saying
what runs where. The KV-cache arena is preallocated per generation stage and
the new keys/values of each step are written into it at their slots
(= position codes); nothing grows step by step.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hiergen.errors import HiergenError
from hiergen.runtime.arena import CacheSpec, DeviceArena, HostArena
from hiergen.runtime.manifest import FragmentSpec, Manifest

log = logging.getLogger("hiergen")

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
BACKENDS = ("auto",) + tuple(PROVIDERS)
SINGLE_THREAD_BELOW = 8     # CPU decode steps of fewer sequences run on one intra-op thread (decode_session)
_LOCK = threading.Lock()


class BackendError(HiergenError, ValueError):
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


def session(pkg: Path, spec: FragmentSpec, providers: list[str], threads: int | None = None,
            profile: str | None = None) -> ort.InferenceSession:
    """profile: a file prefix for ONNX Runtime's profiler (per-node kernel times; end_profiling() writes it)."""
    so = ort.SessionOptions()
    if profile:
        so.enable_profiling, so.profile_file_prefix = True, profile
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # Flush denormals to zero. ONNX Runtime's CPU exp clamps its input near -104, so every masked
    # score (bias -1e4) leaves a denormal probability that the softmax's sum, division and the
    # probabilities-times-values MatMul then handle in microcode: the interp prefill's softmax ran
    # 6x slower (docs/runtime.md, "Denormals"). Values below 1.2e-38 become 0; nothing else changes.
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    # Pool threads stop spinning when a run returns. Every multi-threaded session has its own pool, and
    # a pool left spinning after its last run took a core from the next session's run: the VQ-VAE
    # decoder ran 113 ms after the batch-8 decode steps instead of 66 ms (docs/runtime.md, "Spinning").
    so.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(pkg / spec.file), so, providers=[_with_options(p, pkg, spec) for p in providers])


def _with_options(provider: str, pkg: Path, spec: FragmentSpec):
    """The TensorRT EP with its options from the package (precision, profiles, engine cache:
    runtime/tensorrt.py); other providers as they are."""
    if provider != PROVIDERS["tensorrt"]:
        return provider
    from hiergen.runtime.tensorrt import default_cache_dir, ort_trt_options
    return provider, ort_trt_options(spec, default_cache_dir(pkg))


class OrtStepModel:
    """StepModel (runtime/orchestrator.py) over one exported transformer step graph; caches are Arenas."""

    def __init__(self, pkg: Path, manifest: Manifest, model: str, providers: list[str], threads: int | None = None,
                 make_session=session):
        """make_session(pkg, spec, providers, threads): an ONNX Runtime session by default; the TensorRT engine
        path (runtime/tensorrt.py) passes sessions over engines."""
        spec = manifest.fragment(model, "step")
        cfg = manifest.model_config
        self.name = spec.name
        self.sess = make_session(pkg, spec, providers, threads)
        pre = spec.prefill
        self.prefill_sess = make_session(pkg, manifest.fragments[pre], providers, threads) if pre else None
        dec = spec.decode                 # the step graph at new_tokens = 1, fewer nodes: what the arenas bind
        self.decode_sess = make_session(pkg, manifest.fragments[dec], providers, threads) if dec else self.sess
        dec_spec = manifest.fragments[dec] if dec else spec
        # The arena lives where the graph runs: host memory for the CPU provider, device memory otherwise.
        self.on_device = self.decode_sess.get_providers()[0] != "CPUExecutionProvider"
        # small CPU decode steps run on one intra-op thread, each batch size on its own session (decode_session)
        self._single = None if self.on_device or threads == 1 else (lambda: session(pkg, dec_spec, providers, 1))
        self._by_batch: dict[int, ort.InferenceSession] = {}
        # what the arenas read of the graphs: cache pairs, shapes, names, frame- and window-local blocks
        self.cache_spec = spec_ = CacheSpec.of(manifest, model)
        if spec.kv_cache.slot_axis != 2:
            raise BackendError(f"{spec.name}: the arenas hold caches as (batch, heads, slots, head_dim); "
                               "this package puts slots elsewhere: re-export it with this hiergen")
        self.tokens_name, self.codes_name, self.logits_name = spec_.tokens_name, spec_.codes_name, spec_.logits_name
        self.new_names = spec.kv_cache.new_names
        self.text_len, self.grid, self.image_vocab = cfg.text_len, cfg.grid, cfg.image_vocab

    def new_cache(self, batch: int) -> HostArena | DeviceArena:
        return DeviceArena(self, batch) if self.on_device else HostArena(self, batch, self.decode_session(batch))

    def decode_session(self, batch: int) -> ort.InferenceSession:
        """The decode graph's session for a CPU arena of `batch` sequences. Below SINGLE_THREAD_BELOW a
        session with one intra-op thread, one per batch size, made on first use; otherwise `decode`, with
        the pipeline's threads. Measured on a 2-core VM (docs/runtime.md, "One thread for small decode
        steps"): small steps run faster on one thread than split over two, and a batch-4 step 12-17%
        faster on a session of its own than on one that also runs batch 2."""
        if batch >= SINGLE_THREAD_BELOW or self._single is None:
            return self.decode_sess
        with _LOCK:                                     # pipelines may be shared by threads
            if batch not in self._by_batch:
                self._by_batch[batch] = self._single()
            return self._by_batch[batch]

    def prefill(self, tokens: np.ndarray, codes: np.ndarray, cache: HostArena | DeviceArena) -> np.ndarray:
        """Logits (B, T, V) of a prefix (text, given frames) written into an empty arena: the prefill graph."""
        if cache.written or self.prefill_sess is None:
            return self.step(tokens, codes, cache)
        names = [self.logits_name, *self.new_names]
        out = self.prefill_sess.run(names, {self.tokens_name: tokens, self.codes_name: codes})
        cache.store(codes[0], out[1:])          # every sequence of a step writes the same slots
        return out[0]

    def decode(self, tokens: np.ndarray, codes: np.ndarray, cache: HostArena | DeviceArena) -> np.ndarray:
        """Logits (B, 1, V) of one image token per sequence: the decode graph on the bound arena (they live
        in the arena until the next step)."""
        return cache.decode(tokens, codes)

    def step(self, tokens: np.ndarray, codes: np.ndarray, cache: HostArena | DeviceArena) -> np.ndarray:
        """Logits (B, T, V) of any new tokens: the prefill graph into an empty arena, else the step graph
        through the caches (the general path; generation uses prefill and decode)."""
        if not cache.written and self.prefill_sess is not None:
            return self.prefill(tokens, codes, cache)
        out = cache.run_past(self.sess, tokens, codes, [self.logits_name, *self.new_names])
        cache.store(codes[0], out[1:])
        return out[0]


class OrtCodec:
    """The VQ-VAE fragments: uint8 RGB frames <-> int64 tokens."""

    def __init__(self, pkg: Path, manifest: Manifest, providers: list[str], threads: int | None = None):
        enc, dec = manifest.fragment("vqvae", "encoder"), manifest.fragment("vqvae", "decoder")
        self.enc, self.dec = session(pkg, enc, providers, threads), session(pkg, dec, providers, threads)
        self.enc_in, self.dec_in = enc.inputs[0].name, dec.inputs[0].name
        self.image_size = manifest.image_size

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self.dec.run(None, {self.dec_in: np.ascontiguousarray(tokens, np.int64)})[0]

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return self.enc.run(None, {self.enc_in: np.ascontiguousarray(frames, np.uint8)})[0]
