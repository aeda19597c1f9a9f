"""Multi-frame-rate sampling of 5-frame windows from clips (docs/model.md, 'The algorithm in brief').

Clips are stored at the native 16 fps. A window of `WINDOW` frames at rate r
takes every (16 / r)-th frame.
- Keyframe stage: the rate token is the LOWEST rate at which the window still
  fits in the clip, and the five frames are spread evenly over the WHOLE clip,
  so they cover the whole described action (what the rate token promises). With
  clips of any length and rates in powers of two, the true spacing lies
  between 1 and 2 strides of the token's rate; a window of exact strides would
  cover only 50-100% of the clip and miss the end of the action.
- Interpolation stage: a window at a rate HIGHER than the clip's keyframe
  rate, starting anywhere in the clip (the model fills frames 2 and 4 of it).
- Fixed rate (the frame-by-frame baseline and the one-rate ablation): a
  window of exact strides at one given rate, starting anywhere.
"""
from __future__ import annotations

import numpy as np

from hiergen.errors import UsageError

RATES = (1, 2, 4, 8, 16)   # frames per second; one text token each
NATIVE_FPS = 16
WINDOW = 5


def stride(rate: int, native_fps: int = NATIVE_FPS) -> int:
    if rate not in RATES or native_fps % rate:
        raise UsageError(f"unknown frame rate {rate!r}; choose one of {', '.join(map(str, RATES))} fps")
    return native_fps // rate


def span(rate: int, n: int = WINDOW) -> int:
    """Native frames covered by a window of n frames at `rate` (first to last, inclusive)."""
    return (n - 1) * stride(rate) + 1


def fits(n_frames: int, rate: int, n: int = WINDOW) -> bool:
    return span(rate, n) <= n_frames


def keyframe_rate(n_frames: int, n: int = WINDOW) -> int | None:
    """The lowest rate at which n frames fit in a clip of n_frames native frames (None: too short)."""
    for rate in RATES:
        if fits(n_frames, rate, n):
            return rate
    return None


def interp_rates(n_frames: int, n: int = WINDOW) -> tuple[int, ...]:
    """Rates above the clip's keyframe rate at which a window fits: the interpolation stage's rates."""
    key = keyframe_rate(n_frames, n)
    return () if key is None else tuple(r for r in RATES if r > key and fits(n_frames, r, n))


def window(n_frames: int, rate: int, start: int, n: int = WINDOW) -> np.ndarray:
    """Native frame indices of the window at `rate` starting at `start`."""
    if not fits(n_frames, rate, n):
        raise ValueError(f"{n} frames at {rate} fps need {span(rate, n)} native frames; the clip has {n_frames}")
    last_start = n_frames - span(rate, n)
    if not 0 <= start <= last_start:
        raise ValueError(f"window start {start} out of range 0..{last_start}")
    return start + stride(rate) * np.arange(n)


def sample_keyframes(n_frames: int, rng: np.random.Generator | None = None, n: int = WINDOW) -> tuple[int, np.ndarray]:
    """(rate, indices) for the keyframe stage: lowest rate that fits, frames spread from the first to the last."""
    rate = keyframe_rate(n_frames, n)
    if rate is None:
        raise ValueError(f"clip of {n_frames} frames is too short for {n} frames at {NATIVE_FPS} fps")
    return rate, np.round(np.linspace(0, n_frames - 1, n)).astype(np.int64)


def sample_fixed(n_frames: int, rate: int, rng: np.random.Generator, n: int = WINDOW) -> np.ndarray | None:
    """Indices of a window at exactly `rate`, starting anywhere; None if the clip is too short."""
    if not fits(n_frames, rate, n):
        return None
    start = int(rng.integers(0, n_frames - span(rate, n) + 1))
    return window(n_frames, rate, start, n)


def sample_interp(n_frames: int, rng: np.random.Generator, n: int = WINDOW) -> tuple[int, np.ndarray] | None:
    """(rate, indices) for interpolation training: a higher rate, a window from anywhere; None if none fits."""
    rates = interp_rates(n_frames, n)
    if not rates:
        return None
    rate = int(rates[rng.integers(len(rates))])
    start = int(rng.integers(0, n_frames - span(rate, n) + 1))
    return rate, window(n_frames, rate, start, n)
