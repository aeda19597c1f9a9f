"""Token sampling with a counter-based random generator that every runtime can reproduce.

The generator (specified here, implemented again in the C++ runtime):
    mix64(x):  x ^= x >> 30; x *= 0xBF58476D1CE4E5B9; x ^= x >> 27;
               x *= 0x94D049BB133111EB; x ^= x >> 31          (all mod 2^64)
    key      = mix64(seed + 0x9E3779B97F4A7C15 * (stream + 1))
    bits     = mix64(key ^ (counter * 0xD1B54A32D192ED69))
    uniform  = (bits >> 11) * 2^-53                            in [0, 1)
A draw depends only on (seed, stream, counter), never on how many draws came
before or how sequences were batched: the orchestrator names each token by
its stream (stage, round, sequence) and counter (position code).

Sampling, in float64: greedy when top_k == 1 or temperature == 0 (lowest
index among equal maxima); otherwise logits / temperature, keep the top_k
largest (stable order, 0 = all), softmax, keep the smallest prefix whose
probability reaches top_p, and pick the first index whose cumulative
probability exceeds uniform * total.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_M = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_CTR = np.uint64(0xD1B54A32D192ED69)


def mix64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * _C1
        x = x ^ (x >> np.uint64(27))
        x = x * _C2
        return x ^ (x >> np.uint64(31))


def _mix64_int(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _uniform_small(seed: int, streams, counter: int) -> np.ndarray:
    """uniform() for a few streams and one counter in Python integers: the same bits, far fewer numpy calls."""
    out = np.empty(len(streams), np.float64)
    for i, st in enumerate(streams):
        key = _mix64_int((seed + 0x9E3779B97F4A7C15 * (int(st) + 1)) & 0xFFFFFFFFFFFFFFFF)
        out[i] = (_mix64_int(key ^ ((int(counter) * 0xD1B54A32D192ED69) & 0xFFFFFFFFFFFFFFFF)) >> 11) * 2.0 ** -53
    return out


def uniform(seed: int, stream, counter) -> np.ndarray:
    """Uniform draws in [0, 1) for broadcastable arrays of streams and counters."""
    if np.ndim(counter) == 0 and np.ndim(stream) == 1 and len(stream) <= 64 and seed >= 0:
        return _uniform_small(seed & 0xFFFFFFFFFFFFFFFF, stream, int(counter))      # a decode step's draws
    s = np.asarray(stream, dtype=np.uint64)
    c = np.asarray(counter, dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _GOLDEN * (s + np.uint64(1)))
        bits = mix64(key ^ (c * _CTR))
    return (bits >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


@dataclass(frozen=True)
class SamplerOptions:
    temperature: float = 1.0
    top_k: int = 0          # 0: no top-k cut; 1: greedy
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0 = off, 1 = greedy), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if problems:
            raise ValueError("bad sampler options: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.top_k == 1 or self.temperature == 0


def sample(logits: np.ndarray, u: np.ndarray, opts: SamplerOptions) -> np.ndarray:
    """logits (B, V), u (B,) uniform draws -> token ids (B,) int64."""
    logits = np.asarray(logits)
    if opts.greedy:
        return np.argmax(logits, axis=-1).astype(np.int64)
    rows = _rows(len(logits))                     # plain row indexing: take_along_axis costs more at B <= 8
    # The top-k set and order are those of the logits themselves (dividing by a positive temperature
    # in float64 keeps order and ties), so only the k survivors are converted and divided.
    order = _top(logits, opts.top_k, rows)
    zk = logits[rows, order].astype(np.float64)
    if opts.temperature != 1.0:
        zk /= opts.temperature
    p = np.exp(zk - zk[:, :1])
    p /= p.sum(axis=-1, keepdims=True)
    if opts.top_p < 1.0:
        before = np.cumsum(p, axis=-1) - p         # mass strictly before each candidate
        p = np.where(before < opts.top_p, p, 0.0)
    c = np.cumsum(p, axis=-1)
    idx = np.minimum((c <= (u * c[:, -1])[:, None]).sum(axis=-1), order.shape[1] - 1)
    return order[rows[:, 0], idx].astype(np.int64)


_ROWS = [np.arange(b)[:, None] for b in range(65)]


def _rows(b: int) -> np.ndarray:
    return _ROWS[b] if b < len(_ROWS) else np.arange(b)[:, None]


def _top(z: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The first k columns of a stable descending argsort of z (B, V), without sorting all V."""
    V = z.shape[-1]
    rows = np.arange(len(z))[:, None] if rows is None else rows
    if not k or k >= V:
        return np.argsort(-z, axis=-1, kind="stable")
    part = np.argpartition(z, V - k, axis=-1)[:, V - k:]           # the k largest, ties at the edge arbitrary
    zk = z[rows, part]
    kth = zk.min(axis=-1, keepdims=True)
    if np.count_nonzero(z >= kth) == k * len(z):                   # no tie at the k-th value: the set is exact
        return part[rows, np.lexsort((part, -zk), axis=-1)]        # by value, then by index
    greater, equal = z > kth, z == kth
    room = k - greater.sum(axis=-1, keepdims=True)                  # ties at the k-th value: lowest indices first
    chosen = greater | (equal & (np.cumsum(equal, axis=-1) <= room))
    cand = np.nonzero(chosen)[1].reshape(len(z), k)                 # k per row, in index order
    return cand[rows, np.argsort(-z[rows, cand], axis=-1, kind="stable")]


def guide(cond: np.ndarray, uncond: np.ndarray, scale: float) -> np.ndarray:
    """Classifier-free guidance: g + s * (c - g)."""
    return uncond + scale * (cond - uncond)
