"""t2i_step, keyframe_step, interp_step: one transformer step over static KV caches.

In:  tokens (B, T) int64, codes (B, T) int64 (position codes = cache slots),
     past_k_base, past_v_base[, past_k_plus, past_v_plus] (n_layer, B, n_head, seq_len, head_dim) f32.
Out: logits (B, T, image_vocab) f32 and new_k_base, new_v_base[, new_k_plus, new_v_plus]
     (n_layer, B, n_head, T, head_dim) f32: the new tokens' keys/values, which the
     runtime writes into its cache arena at slots `codes` (the graph never grows a tensor).
Masks are computed inside the graph from the codes (training/masks.py).
T = 1 is a decode step, T > 1 a prefill; every sequence of a step writes the same slots.
"""
from __future__ import annotations

import torch

from hiergen.config import Kind, ModelConfig
from hiergen.export.fragments.contract import Contract, TensorSpec
from hiergen.training.model import DualTransformer, KVCache

MAX_BATCH = 8      # 2 x 4 sequences with classifier-free guidance


def name(kind: Kind) -> str:
    return f"{Kind(kind).value}_step"


def channels(kind: Kind) -> tuple[str, ...]:
    return ("base",) if Kind(kind) == Kind.T2I else ("base", "plus")


def contract(cfg: ModelConfig, kind: Kind) -> Contract:
    cache = lambda n: TensorSpec(n, "float32", (cfg.n_layer, "batch", cfg.n_head, cfg.seq_len, cfg.head_dim))  # noqa: E731
    new = lambda n: TensorSpec(n, "float32", (cfg.n_layer, "batch", cfg.n_head, "new_tokens", cfg.head_dim))   # noqa: E731
    ch = channels(kind)
    return Contract(
        name(kind),
        inputs=(TensorSpec("tokens", "int64", ("batch", "new_tokens")),
                TensorSpec("codes", "int64", ("batch", "new_tokens")),
                *(cache(f"past_{kv}_{c}") for c in ch for kv in "kv")),
        outputs=(TensorSpec("logits", "float32", ("batch", "new_tokens", cfg.image_vocab)),
                 *(new(f"new_{kv}_{c}") for c in ch for kv in "kv")),
        axes={"batch": (1, 2, MAX_BATCH), "new_tokens": (1, 1, cfg.seq_len)},
        sample_axes={"batch": 2, "new_tokens": 3})


class Graph(torch.nn.Module):
    def __init__(self, model: DualTransformer):
        super().__init__()
        self.model = model

    def forward(self, tokens, codes, k_base, v_base, k_plus=None, v_plus=None):
        logits, new_kv = self.model(tokens, codes, KVCache(k_base, v_base, k_plus, v_plus))  # (B, T, V)
        out = [logits]
        for c in range(len(new_kv[0])):                       # per channel: stack layers -> (n_layer, B, H, T, hd)
            out += [torch.stack([layer[c][0] for layer in new_kv]), torch.stack([layer[c][1] for layer in new_kv])]
        return tuple(out)


def sample(cfg: ModelConfig, kind: Kind) -> dict[str, torch.Tensor]:
    """A prefill of the first text slots with an empty cache."""
    c = contract(cfg, kind)
    b, t = c.sample_axes["batch"], c.sample_axes["new_tokens"]
    feeds = {"tokens": torch.ones(b, t, dtype=torch.int64),
             "codes": torch.arange(t).expand(b, t).contiguous()}
    for spec in c.inputs[2:]:
        feeds[spec.name] = torch.zeros(c.shape(spec, {"batch": b}))
    return feeds
