"""Training sequences from tokenised clips, with multi-frame-rate sampling.

A training sample is `[rate][text][boi]` then the frames of a 5-frame window
in the order of the model's kind (masks.sequence_codes). Image slots hold the
previous token of their own frame (model.shift_frames); targets are the
frames' own tokens where the kind has a loss, IGNORE elsewhere:
  t2i       frame 1 of a keyframe window          (loss on frame 1)
  keyframe  the keyframe window, lowest rate       (loss on frames 2-5)
            (or, with fixed_rate, a window at that rate anywhere: the baselines)
  interp    a window at a higher rate, anywhere    (loss on frames 2 and 4)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hiergen.config import Kind, ModelConfig
from hiergen.rates import sample_fixed, sample_interp, sample_keyframes
from hiergen.tokenizer import TextTokenizer
from hiergen.training.masks import frame_order, sequence_codes
from hiergen.training.model import shift_frames

IGNORE = -100
LOSS_FRAMES = {Kind.T2I: {0}, Kind.KEYFRAME: {1, 2, 3, 4}, Kind.INTERP: {1, 3}}


@dataclass(frozen=True)
class TokenClip:
    caption: str
    tokens: np.ndarray          # (T, grid, grid) codebook indices at the native 16 fps, or with n_frames set
    n_frames: int | None = None  # only the clip's five keyframes, (5, grid, grid), of a clip this long

    @property
    def keyframes_only(self) -> bool:
        return self.n_frames is not None

    def keyframes(self) -> np.ndarray:
        """(5, grid, grid): the five frames keyframe training takes, spread over the whole clip."""
        return self.tokens if self.keyframes_only else self.tokens[sample_keyframes(len(self.tokens))[1]]


@dataclass
class Batch:
    tokens: torch.Tensor    # (B, L) int64 slot inputs
    codes: torch.Tensor     # (1, L) int64 position codes, shared by the batch (masks broadcast)
    targets: torch.Tensor   # (B, L) int64, IGNORE where there is no loss


def token_clips(shard) -> list[TokenClip]:
    """TokenClips of one split of `hiergen tokenize` shards (keyframes-only shards carry each clip's length)."""
    n = shard.n_frames
    return [TokenClip(str(shard.captions[i]), shard.clip(i).astype("int64"), None if n is None else int(n[i]))
            for i in range(len(shard))]


def usable(clips: list[TokenClip], kind: Kind, fixed_rate: int | None = None) -> list[TokenClip]:
    """Clips that can give a sample of this kind (interpolation needs a rate above the keyframe rate)."""
    rng = np.random.default_rng(0)
    if fixed_rate is None and kind != Kind.INTERP:
        return [c for c in clips if len(c.tokens) >= 5]
    clips = [c for c in clips if not c.keyframes_only]      # other windows need every frame of the clip
    if fixed_rate is not None:
        return [c for c in clips if sample_fixed(len(c.tokens), fixed_rate, rng) is not None]
    return [c for c in clips if sample_interp(len(c.tokens), rng) is not None]


def sample_window(clip: TokenClip, kind: Kind, rng: np.random.Generator,
                  fixed_rate: int | None = None) -> tuple[int, np.ndarray]:
    if fixed_rate is not None:
        idx = sample_fixed(len(clip.tokens), fixed_rate, rng)
        if idx is None:
            raise ValueError(f"clip too short for a window at {fixed_rate} fps; filter with usable() first")
        return fixed_rate, idx
    if kind == Kind.INTERP:
        picked = sample_interp(len(clip.tokens), rng)
        if picked is None:
            raise ValueError("clip too short for an interpolation window; filter with usable() first")
        return picked
    if clip.keyframes_only:                                 # the tokens are the five keyframes already
        return sample_keyframes(clip.n_frames, rng)[0], np.arange(len(clip.tokens))
    return sample_keyframes(len(clip.tokens), rng)


def make_batch(clips: list[TokenClip], kind: Kind, cfg: ModelConfig, tok: TextTokenizer,
               rng: np.random.Generator, batch: int, text_dropout: float = 0.1,
               fixed_rate: int | None = None) -> Batch:
    """Draw `batch` samples; with probability text_dropout the caption is dropped (for guidance)."""
    codes = sequence_codes(cfg, kind)
    order = frame_order(kind, cfg.n_frames)
    rows_tok, rows_tgt = [], []
    for i in rng.integers(0, len(clips), size=batch):
        clip = clips[int(i)]
        rate, idx = sample_window(clip, kind, rng, fixed_rate)
        text = tok.encode(clip.caption, rate, drop_text=bool(rng.random() < text_dropout))
        frames = torch.as_tensor(clip.tokens[idx[order]].reshape(len(order), -1), dtype=torch.int64)  # (F, P)
        inputs = shift_frames(frames, cfg.image_vocab).flatten()
        targets = frames.clone()
        for j, f in enumerate(order):
            if f not in LOSS_FRAMES[kind]:
                targets[j] = IGNORE
        rows_tok.append(torch.cat([torch.tensor(text), inputs]))
        rows_tgt.append(torch.cat([torch.full((cfg.text_len,), IGNORE), targets.flatten()]))
    tokens = torch.stack(rows_tok)
    return Batch(tokens=tokens, codes=codes.unsqueeze(0), targets=torch.stack(rows_tgt))
