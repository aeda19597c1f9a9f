"""Export-only rewrites of a trained DualTransformer for the ONNX graphs (used by export/fragments/step.py).

- LookupTables: the model's masks and position embeddings evaluated once into
  tables indexed by position code, so a step graph looks rows up instead of
  computing masks from codes (far fewer graph nodes);
- DecodeWeights and decode_step: the one-token decode graph's refolded weights
  (both channels' QKV one matrix, the channel mix folded into one stacked
  output projection) and the step that uses them.
Same values as the model's own forward (tests/test_export.py).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hiergen.config import Kind
from hiergen.training.model import DualTransformer, mask_bias
from hiergen.windows import layouts


class LookupTables(nn.Module):
    """A model's masks and position embeddings as tables indexed by position code (seq_len rows).

    masks.py defines who sees whom as functions of codes; for the exported step
    graphs those functions are evaluated once, here, for every (query, key)
    pair of codes, and a step looks its rows up: a handful of Gathers instead of
    ~150 integer and boolean nodes per step. Built from a trained model at
    export time (the positions copy its parameters), never trained.

    Frame-local attention-base: an image token sees in attention-base only the
    text and its own frame (masks.py), so a step graph reads attention-base
    from a block of block_len = text_len + tokens_per_frame slots, the text's
    keys/values followed by those of the frame its new tokens are in (block
    slot of a code: the code for text, text_len + index in frame for an image
    token), instead of all seq_len slots. The runtime keeps one block per frame
    (the text in each) and hands the step the block of the frame it writes;
    every new token of a cached step is therefore text or in one frame.
    """

    def __init__(self, model: "DualTransformer"):
        super().__init__()
        cfg = model.cfg
        L, P = cfg.text_len, cfg.tokens_per_frame
        codes = torch.arange(cfg.seq_len)
        with torch.no_grad():
            self.register_buffer("positions", model.positions(codes[None])[0].clone(), persistent=False)  # (seq_len, C)
            self.layout: list[tuple[int, int | None]] = []                          # per layer: table index per channel
            tables: list[torch.Tensor] = []
            seen: dict[int, int] = {}
            for pair in model.masks(codes[None], codes[None]):
                idx = []
                for m in pair:
                    if m is None:
                        idx.append(None)
                        continue
                    if id(m) not in seen:
                        seen[id(m)] = len(tables)
                        tables.append(m[0])                                        # (seq_len, seq_len) bool
                    idx.append(seen[id(m)])
                self.layout.append(tuple(idx))
            block_slot = torch.where(codes < L, codes, L + (codes - L) % P)         # (seq_len,)
            frame = torch.clamp(codes - L, min=0) // P
            # block_codes[q, j]: the code held by slot j of query q's block (its own frame's block)
            j = torch.arange(cfg.block_len)
            block_codes = torch.where(j < L, j, L + frame[:, None] * P + (j - L))
            base = tables[self.layout[0][0]]
            outside = base & ~((codes[None] < L) | (frame[:, None] == frame[None]))
            assert not outside.any(), "attention-base sees outside the text and its own frame: no frame-local cache"
            base_block = base.gather(1, block_codes)                               # (seq_len, block_len)
        # bool, 1 byte per pair: a quarter of a float table in the package
        self.register_buffer("visible", torch.stack(tables), persistent=False)     # (n_tables, seq_len, seq_len)
        self.register_buffer("base_block", base_block, persistent=False)
        # A decode step (one new token) sees itself through its new key, never through its not yet
        # written cache slot: the tables without the diagonal are its whole mask (decode_biases).
        assert all(t.diagonal().all() for t in tables), "a token that cannot see itself: no decode tables"
        own = block_slot[:, None] == j[None]
        # one buffer per table: a decode step then gathers a row of it, not first a whole table
        self.decode_plus = sorted(self._plus_tables())
        parity = {}
        for layer, idx in enumerate(self.layout):
            if idx[1] is not None:
                parity.setdefault(idx[1], layer % 2)
        for i in self.decode_plus:
            row = tables[i] & ~torch.eye(cfg.seq_len, dtype=torch.bool)
            if model.kind == Kind.INTERP:      # over the query's window block (hiergen/windows.py), not every slot
                row = _window_rows(tables[i], layouts(L, cfg.grid, cfg.n_frames, cfg.window)[parity[i]])
            self.register_buffer(f"decode_bias_{i}", mask_bias(row), persistent=False)          # (seq_len, 1, S)
        self.register_buffer("decode_base_bias", mask_bias(base_block & ~own), persistent=False)
        self.register_buffer("block_slot", block_slot, persistent=False)
        self.register_buffer("seq_slots", codes, persistent=False)
        self.register_buffer("block_slots", j, persistent=False)
        assert all(i[0] == self.layout[0][0] for i in self.layout), "one attention-base mask for every layer"

    def _plus_tables(self) -> set[int]:
        return {idx[1] for idx in self.layout if idx[1] is not None}

    def _by_layer(self, per_table: dict | list) -> list:
        """Per layer, per channel: the entry of the channel's table (None for a missing channel)."""
        return [tuple(None if j is None else per_table[j] for j in idx) for idx in self.layout]

    def layer_masks(self, codes: torch.Tensor) -> list:
        """Per layer, per channel: the bias (B, 1, T, T) of DualTransformer.masks(codes, codes)."""
        T = codes.shape[1]
        out = []
        for i in range(self.visible.shape[0]):
            new = self.visible[i][codes].gather(-1, codes.unsqueeze(1).expand(-1, T, -1))
            out.append(mask_bias(new))
        return self._by_layer(out)

    def layer_biases(self, codes: torch.Tensor) -> list:
        """Per layer, per channel: (bias over the cache (B, 1, T, S), bias over the new tokens (B, 1, T, T)).

        Attention-base's cache is the frame-local block (S = block_len), attention-plus's the
        whole sequence (S = seq_len); slots the step writes are not valid in its cache.
        """
        T = codes.shape[1]
        slot = self.block_slot[codes]                                              # (B, T)
        rows = self.base_block[codes]                                              # (B, T, block_len)
        writing = (self.block_slots.view(1, 1, -1) == slot.unsqueeze(2)).any(dim=1)
        base = (mask_bias(rows & ~writing.unsqueeze(1)),
                mask_bias(rows.gather(-1, slot.unsqueeze(1).expand(-1, T, -1))))
        out = {self.layout[0][0]: base}
        writing = (self.seq_slots.view(1, 1, -1) == codes.unsqueeze(2)).any(dim=1)
        for i in self._plus_tables():
            rows = self.visible[i][codes]
            out[i] = (mask_bias(rows & ~writing.unsqueeze(1)),
                      mask_bias(rows.gather(-1, codes.unsqueeze(1).expand(-1, T, -1))))
        return self._by_layer(out)

    def decode_biases(self, codes: torch.Tensor) -> list:
        """Per layer, per channel: the bias over the cache (B, 1, 1, S) of a decode step (codes (B, 1)):
        the query's table row without its own slot (LookupTables: frame-local for attention-base),
        stored additive (seq_len, 1, S), so a step's mask is one Gather."""
        out = {self.layout[0][0]: self.decode_base_bias[codes]}
        for i in self.decode_plus:
            out[i] = getattr(self, f"decode_bias_{i}")[codes]
        return self._by_layer(out)


def _window_rows(visible: torch.Tensor, layout) -> torch.Tensor:
    """(seq_len, block_len) decode rows of an attention-plus table over each query's window block
    (hiergen/windows.py), the query's own slot removed; refuses a table that sees outside the block."""
    codes = np.arange(layout.seq_len)
    window, slot = layout.place(codes)
    held = torch.from_numpy(layout.block_codes()[np.maximum(window, 0)])           # (seq_len, block_len)
    rows = visible.gather(1, held.clamp(min=0)) & (held >= 0)
    assert torch.equal(rows.sum(1), visible.sum(1)), "attention-plus sees outside its window: no window-local cache"
    return rows & (torch.arange(layout.block_len)[None] != torch.from_numpy(slot)[:, None])


class DecodeWeights(nn.Module):
    """A model's per-layer weights refolded for decode_step, built at export time (like LookupTables).

    Per layer: both channels' QKV projections as one (C, n_channels * 3C) matrix, the query columns
    pre-multiplied by head_dim^-0.5 (no scaling node per channel); for a dual model the two output
    projections stacked (2C, C) with the channel mix a = sigmoid(w) folded in, so that
    [y_base, y_plus] @ proj + proj_bias = a * base.proj(y_base) + (1 - a) * plus.proj(y_plus):
    the mix of Block.mix for an image token, one Gemm instead of two Gemms and four nodes.
    """

    def __init__(self, model: "DualTransformer"):
        super().__init__()
        C, scale = model.cfg.d_model, model.cfg.head_dim ** -0.5
        with torch.no_grad():
            for layer, block in enumerate(model.blocks):
                attns = [a for a in (block.base, block.plus) if a is not None]
                ws, bs = [], []
                for attn in attns:
                    w, b = attn.qkv.weight.t().clone(), attn.qkv.bias.clone()     # (C, 3C), (3C,)
                    w[:, :C] *= scale
                    b[:C] *= scale
                    ws.append(w)
                    bs.append(b)
                self.register_buffer(f"qkv_{layer}", torch.cat(ws, 1).contiguous(), persistent=False)
                self.register_buffer(f"qkv_bias_{layer}", torch.cat(bs), persistent=False)
                if block.plus is not None:
                    a = torch.sigmoid(block.w)
                    proj = torch.cat([block.base.proj.weight.t() * a, block.plus.proj.weight.t() * (1 - a)])
                    self.register_buffer(f"proj_{layer}", proj.contiguous(), persistent=False)   # (2C, C)
                    self.register_buffer(f"proj_bias_{layer}", a * block.base.proj.bias + (1 - a) * block.plus.proj.bias,
                                         persistent=False)

    def qkv(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        return h @ getattr(self, f"qkv_{layer}") + getattr(self, f"qkv_bias_{layer}")

    def mixed_proj(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        return y @ getattr(self, f"proj_{layer}") + getattr(self, f"proj_bias_{layer}")


def decode_step(model: DualTransformer, tables: LookupTables, weights: DecodeWeights, tokens: torch.Tensor,
                codes: torch.Tensor, layer_caches: list) -> tuple[torch.Tensor, list]:
    """forward_cached for one new IMAGE token per sequence (tokens, codes (B, 1), codes >= text_len),
    written for the fewest graph nodes: activations as (B, C) rows, so every Linear is one Gemm and head
    splits are reshapes; both channels' QKV one Gemm and their output projections with the mix another
    (DecodeWeights); masks one additive table row per channel (LookupTables.decode_biases); the token's
    score with its own new key needs no mask (a token always sees itself). Text tokens are the prefill's
    (the runtime sends a one-token text step through the step graph). Same values as forward_cached
    (tests/test_export.py)."""
    cfg = model.cfg
    B, C, H, hd = tokens.shape[0], cfg.d_model, cfg.n_head, cfg.head_dim
    x = (model.tok_image.weight[tokens] + tables.positions[codes]).reshape(B, C)
    new_kv = []
    for layer, (block, biases, caches) in enumerate(zip(model.blocks, tables.decode_biases(codes), layer_caches)):
        n = 1 if block.plus is None else 2
        heads = weights.qkv(layer, block.ln1(x)).reshape(B, 3 * n * H, 1, hd).split(H, dim=1)   # (B, H, 1, hd) each
        ys, kv = [], []
        for c, ((k_cache, v_cache), bias) in enumerate(zip(caches[:n], biases[:n])):
            q, k, v = heads[3 * c:3 * c + 3]                                                   # q pre-scaled
            scores = torch.cat([q @ k_cache.transpose(-1, -2) + bias, (q * k).sum(-1, keepdim=True)], dim=-1)
            p = torch.softmax(scores, dim=-1)
            ys.append(p[..., :-1] @ v_cache + p[..., -1:] * v)                                # (B, H, 1, hd)
            kv.append((k, v))
        if n == 1:
            x = x + _rows(ys[0].reshape(B, C), block.base.proj)
        else:
            x = x + weights.mixed_proj(layer, torch.cat(ys, dim=1).reshape(B, 2 * C))
        x = x + _rows(F.gelu(_rows(block.ln2(x), block.mlp.fc), approximate="tanh"), block.mlp.out)
        new_kv.append(kv)
    return _rows(model.ln_f(x), model.head).reshape(B, 1, -1), new_kv


def _rows(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """linear(x) for x (B, C) as x @ W^T + b: exported as the same folded W^T the step graphs hold (stored
    once in the package), and fused back into one Gemm by ONNX Runtime."""
    y = x @ linear.weight.t()
    return y if linear.bias is None else y + linear.bias
