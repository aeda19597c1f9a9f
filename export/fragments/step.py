"""t2i_step, keyframe_step, interp_step: one transformer step over static KV caches.

In:  tokens (B, T) int64, codes (B, T) int64 (position codes = cache slots),
     per layer l: past_k_base_l, past_v_base_l (B, n_head, block_len, head_dim) f32, the frame-local
     attention-base cache (text + the frame the step writes in; LookupTables in training/model.py),
     [past_k_plus_l, past_v_plus_l (B, n_head, seq_len, head_dim) f32, attention-plus over every slot].
Out: logits (B, T, image_vocab) f32 and per layer new_k_base_l, new_v_base_l[, new_k_plus_l, new_v_plus_l]
     (B, n_head, T, head_dim) f32: the new tokens' keys/values, which the runtime
     writes into its cache arena at slots `codes` (the graph never grows a tensor).
One tensor per layer and channel, so the graph reads the arena in place: a
stacked (n_layer, ...) input would cost a Split, i.e. a copy of the whole cache,
every step. The manifest pairs each past input with its new output (kv_cache)
and lists the frame-local ones (kv_cache.frame_local): the runtime keeps one
block per frame for those, the text's slots copied into each, and binds the
block of the frame a step writes. Attention-base then reads 75 slots instead of
331 per step (64x64 frames, 5 frames), the largest share of a decode step's bytes.

t2i_prefill, keyframe_prefill, interp_prefill: the first step of a stage, into an
empty cache. Same outputs, no cache inputs: the new tokens attend among
themselves only, which is what the step graph computes when nothing was
written before (every slot a prefill may see is one it writes), at a fraction
of the cost (no scores over seq_len empty slots). The manifest names it in the
step fragment's "prefill".
Masks are computed inside the graph from the codes (training/masks.py).
T = 1 is a decode step, T > 1 a prefill; every sequence of a step writes the same slots,
and the image tokens of a step through the step graph are in one frame.

t2i_decode, keyframe_decode, interp_decode: the step graph at new_tokens = 1 for an
image token (codes >= text_len; the runtime sends a one-token text step through the
step graph), the hot path (one run per image token), written for fewer graph nodes
(training/model.py decode_step: (B, C) rows, so each Linear is one Gemm; both
channels' QKV one Gemm and the mixed output projections another (DecodeWeights);
one additive mask row per channel). The manifest names it in the step fragment's
"decode".
interp_decode reads attention-plus from the block of the query's Swin window
(hiergen/windows.py: 91 slots instead of 331; kv_cache.window_local), which the
runtime keeps beside the whole-sequence tensors the step graph reads.
"""
from __future__ import annotations

import torch

from hiergen.config import Kind, ModelConfig
from hiergen.export.fragments.contract import Contract, TensorSpec
from hiergen.export.tables import DecodeWeights, LookupTables, decode_step
from hiergen.runtime.manifest import fragment_name
from hiergen.training.model import DualTransformer
from hiergen.windows import layouts

MAX_BATCH = 8      # 2 x 4 sequences with classifier-free guidance


def name(kind: Kind) -> str:
    return fragment_name(Kind(kind).value, "step")


def prefill_name(kind: Kind) -> str:
    return fragment_name(Kind(kind).value, "prefill")


def decode_name(kind: Kind) -> str:
    return fragment_name(Kind(kind).value, "decode")


def channels(kind: Kind) -> tuple[str, ...]:
    return ("base",) if Kind(kind) == Kind.T2I else ("base", "plus")


def cache_names(cfg: ModelConfig, kind: Kind) -> list[str]:
    """Suffixes of the cache tensors in graph order: k_base_0, v_base_0[, k_plus_0, v_plus_0], k_base_1, ..."""
    return [f"{kv}_{c}_{layer}" for layer in range(cfg.n_layer) for c in channels(kind) for kv in "kv"]


def slots(cfg: ModelConfig, cache: str) -> int:
    """Slots of a cache tensor: the frame-local block for attention-base, every position for attention-plus."""
    return cfg.block_len if "_base_" in cache else cfg.seq_len


def contract(cfg: ModelConfig, kind: Kind) -> Contract:
    names = cache_names(cfg, kind)
    return Contract(
        name(kind),
        inputs=(TensorSpec("tokens", "int64", ("batch", "new_tokens")),
                TensorSpec("codes", "int64", ("batch", "new_tokens")),
                *(TensorSpec(f"past_{n}", "float32", ("batch", cfg.n_head, slots(cfg, n), cfg.head_dim))
                  for n in names)),
        outputs=(TensorSpec("logits", "float32", ("batch", "new_tokens", cfg.image_vocab)),
                 *(TensorSpec(f"new_{n}", "float32", ("batch", cfg.n_head, "new_tokens", cfg.head_dim)) for n in names)),
        axes={"batch": (1, 2, MAX_BATCH), "new_tokens": (1, 1, cfg.seq_len)},
        sample_axes={"batch": 2, "new_tokens": 3},
        kv_cache=tuple((f"past_{n}", f"new_{n}") for n in names),
        kv_frame_local=tuple(f"past_{n}" for n in names if slots(cfg, n) == cfg.block_len))


def prefill_contract(cfg: ModelConfig, kind: Kind) -> Contract:
    c = contract(cfg, kind)
    return Contract(prefill_name(kind), inputs=c.inputs[:2], outputs=c.outputs, axes=c.axes,
                    sample_axes=c.sample_axes)


def window_local(cfg: ModelConfig, kind: Kind) -> dict[str, int]:
    """Past inputs of the decode graph held as Swin-window blocks -> layer parity: the interpolation
    model's attention-plus (hiergen/windows.py; LookupTables checks that nothing outside is seen)."""
    if Kind(kind) != Kind.INTERP:
        return {}
    return {f"past_{n}": int(n.rsplit("_", 1)[1]) % 2 for n in cache_names(cfg, kind) if "_plus_" in n}


def decode_contract(cfg: ModelConfig, kind: Kind) -> Contract:
    """The step graph's contract with new_tokens fixed at 1; the interpolation model's attention-plus
    caches are window blocks (window_local) instead of every slot."""
    c = contract(cfg, kind)
    windowed = window_local(cfg, kind)
    block = layouts(cfg.text_len, cfg.grid, cfg.n_frames, cfg.window)[0].block_len

    def one(spec: TensorSpec) -> TensorSpec:
        shape = tuple(1 if d == "new_tokens" else d for d in spec.shape)
        if spec.name in windowed:
            shape = shape[:2] + (block,) + shape[3:]
        return TensorSpec(spec.name, spec.dtype, shape)
    return Contract(decode_name(kind), inputs=tuple(map(one, c.inputs)), outputs=tuple(map(one, c.outputs)),
                    axes={"batch": c.axes["batch"]}, sample_axes={"batch": c.sample_axes["batch"]},
                    kv_cache=c.kv_cache, kv_frame_local=c.kv_frame_local,
                    kv_window_local=tuple(windowed.items()))


def decode_sample(cfg: ModelConfig, kind: Kind) -> dict[str, torch.Tensor]:
    """A decode step at the first image slot over zero caches."""
    c = decode_contract(cfg, kind)
    b = c.sample_axes["batch"]
    feeds = {"tokens": torch.ones(b, 1, dtype=torch.int64), "codes": torch.full((b, 1), cfg.text_len)}
    for spec in c.inputs[2:]:
        feeds[spec.name] = torch.zeros(c.shape(spec, {"batch": b}))
    return feeds


class Graph(torch.nn.Module):
    def __init__(self, model: DualTransformer):
        super().__init__()
        self.model = model
        self.tables = LookupTables(model)      # masks and positions by code: constants of the graph

    def forward(self, tokens, codes, *caches):
        logits, new_kv = self.model.forward_cached(tokens, codes, per_layer(caches, self.model), self.tables)
        return flatten(logits, new_kv)


class DecodeGraph(torch.nn.Module):
    """One decode step of an image token (new_tokens = 1, codes >= text_len): training/model.py decode_step,
    the step graph with fewer nodes."""

    def __init__(self, model: DualTransformer):
        super().__init__()
        self.model = model
        self.tables = LookupTables(model)
        self.weights = DecodeWeights(model)     # refolded QKV and mixed output projections: graph constants

    def forward(self, tokens, codes, *caches):
        return flatten(*decode_step(self.model, self.tables, self.weights, tokens, codes,
                                    per_layer(caches, self.model)))


class PrefillGraph(torch.nn.Module):
    def __init__(self, model: DualTransformer):
        super().__init__()
        self.model = model
        self.tables = LookupTables(model)

    def forward(self, tokens, codes):
        return flatten(*self.model(tokens, codes, tables=self.tables))


def per_layer(caches: tuple, model: DualTransformer) -> list:
    """The graph's cache inputs in cache_names() order -> per layer ((k_base, v_base), (k_plus, v_plus) or None)."""
    n = len(caches) // model.cfg.n_layer       # 2 (base) or 4 (base, plus)
    return [((caches[i], caches[i + 1]), (caches[i + 2], caches[i + 3]) if n == 4 else None)
            for i in range(0, len(caches), n)]


def flatten(logits, new_kv) -> tuple:
    """logits, then per layer, per channel, k and v: the order of cache_names()."""
    return (logits, *(t for layer in new_kv for channel in layer for t in channel))


def sample(cfg: ModelConfig, kind: Kind) -> dict[str, torch.Tensor]:
    """A prefill of the first text slots with an empty cache (the prefill graph takes tokens and codes of it)."""
    c = contract(cfg, kind)
    b, t = c.sample_axes["batch"], c.sample_axes["new_tokens"]
    feeds = {"tokens": torch.ones(b, t, dtype=torch.int64),
             "codes": torch.arange(t).expand(b, t).contiguous()}
    for spec in c.inputs[2:]:
        feeds[spec.name] = torch.zeros(c.shape(spec, {"batch": b}))
    return feeds
