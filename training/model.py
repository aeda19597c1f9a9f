"""The dual-channel transformer (CogVideo at small scale): modules only.

One class serves the three models; `Kind` says which attention-plus pattern it
has (training/masks.py). The backbone (embeddings, norms, attention-base,
MLPs, head) is the text-to-image model and is frozen in the video models;
attention-plus, its gate `w` and the temporal position table are new.

Inputs are explicit: tokens and their position codes (masks.py), and for
cached decoding the static KV caches of both channels, indexed by position
code. Image slots are fed the PREVIOUS token of their own frame (a <start>
token at each frame's first slot), and the logits at an image slot predict
that slot's own token, so every query sits where its token goes and Swin
windows select the neighbourhood of the token being generated. A frame's last
token is therefore never an input (it is only ever predicted).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hiergen.config import Kind, ModelConfig
from hiergen.windows import layouts
from hiergen.training.masks import base_visible, decode, frame_order, plus_visible, sequence_codes


@dataclass
class KVCache:
    """Static caches, one slot per position code: (n_layer, B, n_head, seq_len, head_dim) each."""
    k_base: torch.Tensor
    v_base: torch.Tensor
    k_plus: torch.Tensor | None = None
    v_plus: torch.Tensor | None = None
    written: bool = False            # set by the first step: before it, a prefill may skip the cache

    @classmethod
    def empty(cls, cfg: ModelConfig, kind: Kind, batch: int, dtype=torch.float32, device=None) -> "KVCache":
        shape = (cfg.n_layer, batch, cfg.n_head, cfg.seq_len, cfg.head_dim)
        z = lambda: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        return cls(z(), z(), *((z(), z()) if kind != Kind.T2I else (None, None)))

    def layers(self) -> list:
        """Per layer ((k_base, v_base), (k_plus, v_plus) or None): views, (B, n_head, seq_len, head_dim) each."""
        n = self.k_base.shape[0]
        plus = [None] * n if self.k_plus is None else [(self.k_plus[i], self.v_plus[i]) for i in range(n)]
        return [((self.k_base[i], self.v_base[i]), plus[i]) for i in range(n)]


# Additive mask value: exp() of it underflows to exactly 0 in float32 and float16
# alike, and unlike -inf it survives reduced-precision engines.
MASKED = -1e4


def mask_bias(mask: torch.Tensor) -> torch.Tensor:
    """Bool (B, Tq, Tk), True = may attend -> additive (B, 1, Tq, Tk)."""
    return torch.where(mask, 0.0, MASKED).unsqueeze(1)


@dataclass(frozen=True)
class FrameBlocks:
    """Attention-base over a whole training sequence (text, then whole frames), as blocks.

    The mask lets a text query see earlier text and an image query the text
    and its own frame (causally, or whole for `bidirectional` frames), so the
    sequence's scores are one text block and one (text + frame) block per
    frame: about a fifth of the dense (T, T) scores of a 5-frame sequence.
    Same values as the dense mask (tests/test_model.py); training only.
    """
    text_len: int
    frame_len: int
    bidirectional: tuple[bool, ...]       # per frame, in sequence order


CAUSAL = "causal"                         # a mask that is exactly causal over the sequence's order


def frame_block_attention(q, k, v, fb: FrameBlocks) -> torch.Tensor:
    """q, k, v (B, H, T, hd) of a sequence laid out as `fb` -> attention output (B, H, T, hd)."""
    B, H, T, hd = q.shape
    L, P, n = fb.text_len, fb.frame_len, len(fb.bidirectional)
    text = F.scaled_dot_product_attention(q[:, :, :L], k[:, :, :L], v[:, :, :L], is_causal=True)

    def blocks(t):                        # (B, H, n, L + P, hd): each frame's block with the text in front
        return torch.cat([t[:, :, None, :L].expand(B, H, n, L, hd), t[:, :, L:].reshape(B, H, n, P, hd)], dim=3)
    causal = torch.ones(P, P, dtype=torch.bool, device=q.device).tril()
    frame_masks = torch.stack([torch.ones_like(causal) if bi else causal for bi in fb.bidirectional])  # (n, P, P)
    mask = torch.cat([torch.ones(n, P, L, dtype=torch.bool, device=q.device), frame_masks], dim=2)   # (n, P, L + P)
    images = F.scaled_dot_product_attention(q[:, :, L:].reshape(B, H, n, P, hd), blocks(k), blocks(v),
                                            attn_mask=mask)
    return torch.cat([text, images.reshape(B, H, n * P, hd)], dim=2)


class Attention(nn.Module):
    """Projections of one attention channel; the pattern comes from the mask."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def heads(self, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        return [t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v)]  # 3 x (B, H, T, hd)

    def forward(self, q, k, v, mask) -> torch.Tensor:
        # q (B, H, Tq, hd), k/v (B, H, Tk, hd), mask (B, Tq, Tk) bool, True = may attend;
        # or, for a whole training sequence, the same pattern as FrameBlocks or CAUSAL (faster).
        if isinstance(mask, FrameBlocks):
            return self.merge(frame_block_attention(q, k, v, mask))
        if isinstance(mask, str) and mask == CAUSAL:
            return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1)))

    def explicit(self, q, k, v, bias) -> torch.Tensor:
        """Attention written out (scaled scores + additive bias, softmax, weights @ v), as Attention.cached
        does without a cache: ONNX Runtime runs it faster than the exported SDPA, whose decomposition also
        guards fully masked rows against NaN (never needed here: every token sees itself)."""
        p = torch.softmax((q * self.head_dim ** -0.5) @ k.transpose(-1, -2) + bias, dim=-1)
        return self.merge(p @ v)

    def cached(self, q, k, v, k_cache, v_cache, bias_cache, bias_new) -> torch.Tensor:
        """Attention over a static cache (B, H, S, hd) plus the new keys, without joining them.

        Scores of the two parts are joined instead (B, H, Tq, S + Tq: small for a
        decode step), so no step copies the cache. bias_*: mask_bias() of each part.
        """
        S = k_cache.shape[2]
        q = q * self.head_dim ** -0.5
        scores = torch.cat([q @ k_cache.transpose(-1, -2) + bias_cache, q @ k.transpose(-1, -2) + bias_new], dim=-1)
        p = torch.softmax(scores, dim=-1)
        return self.merge(p[..., :S] @ v_cache + p[..., S:] @ v)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, T, hd) -> output projection (B, T, C)."""
        B, H, T, hd = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, T, H * hd))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.out = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)

    def forward(self, x):
        return self.out(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, dual: bool):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.base = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.plus = Attention(cfg) if dual else None
        # a = sigmoid(w) mixes the channels for image tokens; w = 0 starts at an even mix.
        self.w = nn.Parameter(torch.zeros(cfg.d_model)) if dual else None

    def mix(self, out: list, is_text: torch.Tensor) -> torch.Tensor:
        """The channels' outputs mixed: attention-base alone for text, a = sigmoid(w) of each for images.
        is_text broadcasts against the outputs."""
        if self.plus is None:
            return out[0]
        a = torch.sigmoid(self.w)
        return torch.where(is_text, out[0], a * out[0] + (1 - a) * out[1])

    def forward(self, x, is_text, masks, cache_kv=None):
        """x (B, T, C); cache_kv: per channel (k, v) cached, or None.

        masks per channel: without a cache a bool (B, T, T) for SDPA, or an additive
        bias (B, 1, T, T) for Attention.explicit (what the exported graphs run);
        with a cache the pair of biases (over the cache, over the new tokens) of
        Attention.cached.

        Returns the new x and the new tokens' keys/values per channel (k, v), each (B, H, T, hd).
        """
        h = self.ln1(x)
        out, new_kv = [], []
        for i, attn in enumerate((self.base, self.plus)):
            if attn is None:
                continue
            q, k, v = attn.heads(h)
            new_kv.append((k, v))
            if cache_kv is None:
                m = masks[i]
                dense_bias = isinstance(m, torch.Tensor) and m.dtype != torch.bool
                out.append(attn.explicit(q, k, v, m) if dense_bias else attn(q, k, v, m))
            else:
                out.append(attn.cached(q, k, v, *cache_kv[i], *masks[i]))
        x = x + self.mix(out, is_text.unsqueeze(-1))
        x = x + self.mlp(self.ln2(x))
        return x, new_kv


class DualTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, kind: Kind):
        super().__init__()
        self.cfg, self.kind = cfg, Kind(kind)
        d = cfg.d_model
        self.tok_text = nn.Embedding(cfg.text_vocab, d)
        self.tok_image = nn.Embedding(cfg.image_vocab + 1, d)   # + <start> at index image_vocab
        self.pos_text = nn.Parameter(torch.randn(cfg.text_len, d) * 0.02)
        self.pos_image = nn.Parameter(torch.randn(cfg.tokens_per_frame, d) * 0.02)
        dual = self.kind != Kind.T2I
        # New temporal table, zero at start: frame positions begin as tiled copies of the image positions.
        self.pos_time = nn.Parameter(torch.zeros(cfg.n_frames, d)) if dual else None
        self.blocks = nn.ModuleList(Block(cfg, dual) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.image_vocab, bias=False)
        self.apply(self._init)
        if dual:
            self.init_plus_from_base()

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def start_token(self) -> int:
        return self.cfg.image_vocab

    # ------------------------------------------------------------ parameters
    def is_backbone(self, name: str) -> bool:
        return not (name == "pos_time" or ".plus." in name or name.endswith(".w"))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.state_dict().items() if self.is_backbone(n)}

    def video_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.state_dict().items() if not self.is_backbone(n)}

    @torch.no_grad()
    def init_plus_from_base(self) -> None:
        """Plus-QKV as a copy of base QKV; plus output projection random (std 0.02); w = 0."""
        for b in self.blocks:
            b.plus.qkv.load_state_dict(b.base.qkv.state_dict())
            nn.init.normal_(b.plus.proj.weight, std=0.02)
            nn.init.zeros_(b.plus.proj.bias)
            b.w.zero_()

    def freeze_backbone(self) -> None:
        for n, p in self.named_parameters():
            p.requires_grad_(not self.is_backbone(n))

    # ------------------------------------------------------------ forward
    def positions(self, codes: torch.Tensor) -> torch.Tensor:
        """Position embeddings (..., C) of position codes: text positions, or image (+ temporal) positions."""
        pos = decode(codes, self.cfg)
        is_text = pos["text"]
        p_text = self.pos_text[torch.where(is_text, codes, torch.zeros_like(codes))]
        p_image = self.pos_image[pos["within"]]
        if self.pos_time is not None:
            p_image = p_image + self.pos_time[pos["frame"]]
        return torch.where(is_text.unsqueeze(-1), p_text, p_image)

    def embed(self, tokens: torch.Tensor, codes: torch.Tensor,
              tables: "LookupTables | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens/codes (B, T) -> x (B, T, C), is_text (B, T). With `tables`, positions are looked up."""
        is_text = codes < self.cfg.text_len
        zero = torch.zeros_like(tokens)
        tok = torch.where(is_text.unsqueeze(-1), self.tok_text(torch.where(is_text, tokens, zero)),
                          self.tok_image(torch.where(is_text, zero, tokens)))
        return tok + (tables.positions[codes] if tables is not None else self.positions(codes)), is_text

    def masks(self, q_codes: torch.Tensor, k_codes: torch.Tensor, valid: torch.Tensor | None = None):
        """Per layer (base, plus) masks (B, Tq, Tk); `valid` (B, Tk) drops keys not yet written."""
        base = base_visible(q_codes, k_codes, self.cfg, self.kind)
        if valid is not None:
            base = base & valid.unsqueeze(1)
        if self.kind == Kind.T2I:
            return [(base, None)] * self.cfg.n_layer
        plus = []
        for parity in (0, 1):
            m = plus_visible(q_codes, k_codes, self.cfg, self.kind, parity)
            plus.append(m & valid.unsqueeze(1) if valid is not None else m)
        return [(base, plus[i % 2]) for i in range(self.cfg.n_layer)]

    def training_masks(self, codes: torch.Tensor) -> list | None:
        """masks(codes, codes) as the faster structured patterns when `codes` is one whole training
        sequence (sequence_codes of this kind, shared by the batch); None otherwise."""
        cfg = self.cfg
        want = sequence_codes(cfg, self.kind)
        if codes.dim() != 2 or codes.shape[1] != len(want) or not bool((codes.cpu() == want).all()):
            return None
        bidi = tuple(self.kind == Kind.INTERP and f % 2 == 0 for f in frame_order(self.kind, cfg.n_frames))
        base = FrameBlocks(cfg.text_len, cfg.tokens_per_frame, bidi)
        if self.kind == Kind.T2I:
            return [(base, None)] * cfg.n_layer
        if self.kind == Kind.KEYFRAME:           # attention-plus is causal over the frame-major sequence
            return [(base, CAUSAL)] * cfg.n_layer
        dense = self.masks(codes, codes)
        return [(base, plus) for _, plus in dense]

    def forward(self, tokens: torch.Tensor, codes: torch.Tensor, cache: KVCache | None = None,
                tables: "LookupTables | None" = None):
        """tokens, codes (B, T) int64 -> logits over image tokens (B, T, image_vocab), new KV.

        Without a cache the tokens attend among themselves (training, or a
        prefill from scratch); with one see forward_cached. `tables`: masks and
        positions looked up (the exported graphs), same values.
        """
        if cache is not None:
            return self.forward_cached(tokens, codes, cache.layers(), tables)
        x, is_text = self.embed(tokens, codes, tables)
        if tables is not None:
            masks = tables.layer_masks(codes)
        else:
            masks = self.training_masks(codes) or self.masks(codes, codes)
        return self._run(x, is_text, masks, [None] * self.cfg.n_layer)

    def forward_cached(self, tokens: torch.Tensor, codes: torch.Tensor, layer_caches: list,
                       tables: "LookupTables | None" = None):
        """Like forward, attending also to static caches: layer_caches as KVCache.layers().

        A cache slot is valid when some earlier step wrote it, i.e. visible by
        the rules and not among the codes being written now. With `tables`
        (the exported step graphs) masks and positions are looked up by code
        instead of computed: the same values, far fewer graph nodes per step;
        and attention-base reads a frame-local cache (LookupTables).
        """
        x, is_text = self.embed(tokens, codes, tables)
        if tables is not None:
            return self._run(x, is_text, tables.layer_biases(codes), layer_caches)
        slots = torch.arange(self.cfg.seq_len, device=codes.device).expand(codes.shape[0], -1)  # (B, L)
        writing = (slots.unsqueeze(1) == codes.unsqueeze(2)).any(dim=1)                        # (B, L)
        biases: dict[int, torch.Tensor] = {}                  # one bias per distinct mask, shared by layers

        def bias(m):
            if m is not None and id(m) not in biases:
                biases[id(m)] = mask_bias(m)
            return None if m is None else biases[id(m)]
        layer_masks = [tuple((bias(c), bias(n)) for c, n in zip(cm, nm))
                       for cm, nm in zip(self.masks(codes, slots, ~writing), self.masks(codes, codes))]
        return self._run(x, is_text, layer_masks, layer_caches)

    def _run(self, x, is_text, layer_masks, layer_caches):
        new_kv = []
        for block, masks, ckv in zip(self.blocks, layer_masks, layer_caches):
            x, kv = block(x, is_text, masks, ckv)
            new_kv.append(kv)
        return self.head(self.ln_f(x)), new_kv


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


def shift_frames(frames: torch.Tensor, start_token: int) -> torch.Tensor:
    """Image tokens (B, F, P) -> slot inputs (B, F, P): each frame's tokens moved one slot right, <start> first."""
    start = torch.full_like(frames[..., :1], start_token)
    return torch.cat([start, frames[..., :-1]], dim=-1)


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

