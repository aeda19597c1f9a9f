"""The dual-channel transformer (CogVideo at small scale), and load_model to rebuild one from checkpoints.

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

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiergen.config import Kind, ModelConfig
from hiergen.training import checkpoint as ckpt
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
              tables=None) -> tuple[torch.Tensor, torch.Tensor]:
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
                tables=None):
        """tokens, codes (B, T) int64 -> logits over image tokens (B, T, image_vocab), new KV.

        Without a cache the tokens attend among themselves (training, or a
        prefill from scratch); with one see forward_cached. `tables`: masks and
        positions looked up (export/tables.py LookupTables, what the exported
        graphs run), same values.
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
                       tables=None):
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


def shift_frames(frames: torch.Tensor, start_token: int) -> torch.Tensor:
    """Image tokens (B, F, P) -> slot inputs (B, F, P): each frame's tokens moved one slot right, <start> first."""
    start = torch.full_like(frames[..., :1], start_token)
    return torch.cat([start, frames[..., :-1]], dim=-1)


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def load_model(path: str | os.PathLike, backbone: str | os.PathLike | None = None) -> DualTransformer:
    """Rebuild a trained model from its checkpoint(s): a video model needs its backbone's too."""
    c = ckpt.load(path, ModelConfig)
    kind = Kind(c.kind)
    model = DualTransformer(c.config, kind)
    if kind == Kind.T2I:
        ckpt.load_model_state(model, c)
        return model.eval()
    if set(c.model_state) >= set(model.state_dict()):       # trained whole (the random-backbone ablation)
        model.load_state_dict(c.model_state, strict=True)
        return model.eval()
    b = ckpt.load(backbone or Path(path).parent / "t2i.safetensors", ModelConfig, kind="t2i")
    want = c.extra.get("backbone_sha256")          # frozen-backbone checkpoints record the backbone they trained on
    if want is not None and ckpt.model_digest(b.model_state) != want:
        raise ckpt.CheckpointError(
            f"{path} was trained on another backbone than {b.path} (SHA-256 {want[:12]}... expected): pass the "
            "t2i checkpoint it was trained on (its own folder's t2i.safetensors, or --checkpoints with that t2i)")
    model.load_state_dict({**b.model_state, **c.model_state}, strict=True)
    return model.eval()
