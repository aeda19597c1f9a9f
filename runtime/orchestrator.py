"""The keyframe-then-interpolate loop (docs/model.md, 'The algorithm in brief'), torch-free.

    frame 1          <- t2i model             (text only)
    frames 2-5       <- keyframe model        (given frame 1; guidance batch of 2)
    each round       <- interp model          (overlapping triples as frames 1, 3, 5 of a
                                               window at double the rate; all triples one batch)
    pixels           <- VQ-VAE decoder

User frames enter as tokens (the pipeline reads and encodes them): a first
frame replaces the t2i stage; K user keyframes (K in 5, 9, 17, 33) take the
place of the K frames a generation has after its keyframe stage or a round,
and only the remaining rounds run, at the same rates and random streams.

Backends plug in through two small interfaces and the loop never asks which
backend it drives:
    StepModel.new_cache(batch) -> cache           preallocated, both attention channels
    StepModel.prefill(tokens, codes, cache) -> logits   the text and given frames into an empty cache:
                                                  (B, T) int64 in, (B, T, V) float32 out
    StepModel.decode(tokens, codes, cache) -> logits    one image token per sequence: (B, 1) in, (B, 1, V) out
                                                  both write the new keys/values into cache
    Codec.decode(tokens (N, g, g)) -> frames (N, H, W, 3) uint8
    Codec.encode(frames (N, H, W, 3) uint8, H = W = image_size) -> tokens (N, g, g) int64
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from hiergen.runtime.plan import FRAME_COUNTS, Plan, rounds_for
from hiergen.runtime.sampler import SamplerOptions, guide, sample, uniform
from hiergen.tokenizer import TextTokenizer


class StepModel(Protocol):
    text_len: int
    grid: int
    image_vocab: int

    def new_cache(self, batch: int) -> Any: ...
    def prefill(self, tokens: np.ndarray, codes: np.ndarray, cache: Any) -> np.ndarray: ...
    def decode(self, tokens: np.ndarray, codes: np.ndarray, cache: Any) -> np.ndarray: ...


class Codec(Protocol):
    image_size: int

    def decode(self, tokens: np.ndarray) -> np.ndarray: ...
    def encode(self, frames: np.ndarray) -> np.ndarray: ...


STAGES = ("t2i", "keyframe", "interp")


@dataclass
class Request:
    prompt: str
    tokenizer: TextTokenizer
    rate: int                  # keyframe rate
    frames: int                # 5, 9, 17 or 33
    sampler: SamplerOptions
    first_frame: np.ndarray | None = None   # (g, g) tokens of the user's frame 1: replaces the t2i stage
    keyframes: np.ndarray | None = None     # (K, g, g) tokens of the user's keyframes: replace every stage
                                            # that makes K frames

    def __post_init__(self):
        if self.first_frame is not None and self.keyframes is not None:
            raise ValueError("give a first frame or keyframes, not both: the first keyframe is frame 1")
        if self.keyframes is not None:
            keyframe_rounds(len(self.keyframes), self.frames)

    def texts(self, rate: int, n: int = 1) -> np.ndarray:
        """(n, 2, L): the conditional prefix and the text-free one (guidance's other branch)."""
        pair = [self.tokenizer.encode(self.prompt, rate), self.tokenizer.encode(self.prompt, rate, drop_text=True)]
        return np.tile(np.array(pair, np.int64)[None], (n, 1, 1))


@dataclass
class Result:
    tokens: np.ndarray                      # (F, g, g) int64
    fps: float                              # playback rate of the final frames
    timings: dict[str, float] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)


def keyframe_rounds(n: int, frames: int) -> int:
    """Rounds a generation runs before it has `n` frames, for `n` user keyframes of a `frames`-frame video.

    The keyframes are frames 1, 1 + s, 1 + 2s, ... of the video (s = (frames - 1) / (n - 1)),
    so `n` must be a frame count the plan passes through on the way to `frames`.
    """
    rounds_for(frames)
    fits = [c for c in FRAME_COUNTS if c <= frames]
    if n not in fits:
        raise ValueError(f"{n} keyframes cannot make {frames} frames: give {', '.join(map(str, fits[:-1]))}"
                         f"{' or ' if len(fits) > 1 else ''}{fits[-1]} keyframes for {frames} frames "
                         "(they become evenly spaced frames, first and last included, and interpolation fills "
                         "in between), or change the frame count")
    return rounds_for(n)


def slot_codes(text_len: int, grid: int, frame: int) -> np.ndarray:
    p = grid * grid
    return text_len + frame * p + np.arange(p)


def fill_frames(model: StepModel, texts: np.ndarray, given: dict[int, np.ndarray], generate: list[int],
                guidance: float, opts: SamplerOptions, streams: np.ndarray,
                on_token: Callable[[], None] | None = None) -> dict[int, np.ndarray]:
    """Generate frames `generate` (in order) for a batch of sequences.

    texts (S, 2, L): per sequence its conditional and text-free prefix; given:
    frame slot -> tokens (S, P); streams (S,): random stream of each sequence.
    Returns frame slot -> tokens (S, P).
    """
    S, P, start = texts.shape[0], model.grid * model.grid, model.image_vocab
    cfg_on = guidance != 1.0
    text = np.concatenate([texts[:, 0], texts[:, 1]]) if cfg_on else texts[:, 0]     # (B, L)
    B = text.shape[0]
    rep = 2 if cfg_on else 1
    cache = model.new_cache(B)

    # Prefill: text, then each given frame's slots holding its previous token (<start> first).
    tokens, codes = [text], [np.tile(np.arange(model.text_len), (B, 1))]
    for f, toks in sorted(given.items()):
        shifted = np.concatenate([np.full((S, 1), start), toks[:, :-1]], axis=1)
        tokens.append(np.tile(shifted, (rep, 1)))
        codes.append(np.tile(slot_codes(model.text_len, model.grid, f), (B, 1)))
    model.prefill(np.concatenate(tokens, 1).astype(np.int64), np.concatenate(codes, 1).astype(np.int64), cache)

    out = {}
    for f in generate:
        frame_codes = slot_codes(model.text_len, model.grid, f)
        made = np.zeros((S, P), np.int64)
        prev = np.full((S,), start, np.int64)
        for w in range(P):
            logits = model.decode(np.tile(prev, rep)[:, None], np.full((B, 1), frame_codes[w], np.int64), cache)[:, -1]
            if cfg_on:
                logits = guide(logits[:S], logits[S:], guidance)
            u = uniform(opts.seed, streams, frame_codes[w])
            prev = sample(logits, u, opts)
            made[:, w] = prev
            if on_token:
                on_token()
        out[f] = made
    return out


def _user_tokens(tokens: np.ndarray, grid: int) -> np.ndarray:
    if tokens.ndim != 3 or tokens.shape[1:] != (grid, grid):
        raise ValueError(f"user frame tokens {tokens.shape} do not fit the model's {grid}x{grid} grid: "
                         "encode the frames with this model package's codec")
    return tokens.astype(np.int64)


def generate(req: Request, models: dict[str, StepModel], plan: Plan,
             progress: Callable[[str, int], Callable[[], None]] | None = None) -> Result:
    """Tokens of a whole video. `progress(stage, n_tokens)` may return a per-token callback."""
    rounds = rounds_for(req.frames)
    t2i, key, interp = (models[s] for s in STAGES)
    P = t2i.grid * t2i.grid
    g = t2i.grid
    res = Result(tokens=np.zeros(0), fps=float(req.rate))
    texts = req.texts(req.rate)                                                      # (1, 2, L)

    def tick(stage: str, n: int):
        return progress(stage, n) if progress else None

    if req.keyframes is not None:
        frames = list(_user_tokens(req.keyframes, g).reshape(-1, P))
    else:
        t = time.perf_counter()
        if req.first_frame is not None:
            f1 = _user_tokens(req.first_frame[None], g).reshape(1, P)
        else:
            f1 = fill_frames(t2i, texts, {}, [0], plan.guidance["t2i"], req.sampler, np.array([0]),
                             tick("frame 1", P))[0]
            res.timings["t2i"], t = time.perf_counter() - t, time.perf_counter()
        made = fill_frames(key, texts, {0: f1}, [1, 2, 3, 4], plan.guidance["keyframe"], req.sampler,
                           np.array([1 << 16]), tick("keyframes", 4 * P))
        frames = [f1[0]] + [made[f][0] for f in (1, 2, 3, 4)]
        res.timings["keyframe"] = time.perf_counter() - t
    done = rounds_for(len(frames))                  # user keyframes may stand for the first rounds' output
    rate = req.rate * 2 ** done
    for r in range(done, rounds):
        t = time.perf_counter()
        rate *= 2
        token_rate = min(rate, plan.max_rate_token)
        n = len(frames) // 2                        # overlapping triples (2i, 2i+1, 2i+2)
        given = {0: np.stack(frames[0:-1:2]), 2: np.stack(frames[1::2]), 4: np.stack(frames[2::2])}
        made = fill_frames(interp, req.texts(token_rate, n), given, [1, 3], plan.guidance["interp"], req.sampler,
                           (2 << 16) + (r << 8) + np.arange(n), tick(f"round {r + 1}", 2 * P))
        new = []
        for i in range(n):
            new += [frames[2 * i], made[1][i], frames[2 * i + 1], made[3][i]]
        frames = new + [frames[-1]]
        res.timings[f"interp{r + 1}"] = time.perf_counter() - t
    res.tokens = np.stack(frames).reshape(len(frames), g, g)
    res.fps = float(rate)
    return res
