"""Synthetic captioned clips: one object acting out its caption on a dark background.

The renderer is the data source the whole model learns from, so its rules are
the contract the analyzer checks against:
- native 16 fps, square frames (64x64 by default, up to 256);
- the described action is complete within the clip: quick actions last 1-2 s,
  slow ones 4-8 s, the duration jittered per clip;
- the object moves at constant speed along its path (a bounce follows |sin|),
  with sub-pixel, anti-aliased positions, and never leaves the frame.
Deterministic per seed.
"""
from __future__ import annotations

import cv2
import numpy as np

from hiergen.clip import Clip
from hiergen.errors import UsageError
from hiergen.rates import NATIVE_FPS
from hiergen.captions import COLOURS, DIRECTION_VECTORS, Caption, all_captions, parse

MIN_SIZE, MAX_SIZE = 16, 256
DURATION_S = {"quickly": (1.0, 2.0), "slowly": (4.0, 8.0), None: (1.0, 6.0)}
HALF_EXTENT = {"small": 0.09, "large": 0.18}   # object half-width as a share of the frame side
BACKGROUND_RGB = (18, 18, 26)
# Path lengths as shares of the span the object's centre can cover (path_span):
LEG_SHARE = {"single": (0.45, 0.85), "two_phase": (0.45, 0.8)}   # each leg
BOUNCE_SHARE = (0.5, 0.8)                                          # height of each hump
_SHIFT = 4                                      # cv2 fixed-point bits: 1/16 pixel positions
_SUPERSAMPLE = 4                                # polygons are drawn at 4x and averaged down


def check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UsageError(f"frame size {size!r} is out of range: use {MIN_SIZE} to {MAX_SIZE} pixels (default 64)")
    return int(size)


def edge_margin(side: float) -> float:
    """Gap kept between the object's edge and the frame border, so anti-aliased edges stay inside."""
    return max(1.5, 0.03 * side)


def path_span(side: float, r: float) -> float:
    """Range the centre of an object of half-extent r can cover along one axis."""
    return side - 2 * (r + edge_margin(side))


def _path(caption: Caption, side: float, r: float, rng: np.random.Generator):
    """Return p(t) -> (x, y) centre positions for t in [0, 1], inside the frame."""
    lo = r + edge_margin(side)                # allowed range of the centre: [lo, lo + span]
    span = path_span(side, r)
    hi = lo + span
    phases = caption.phases
    if not phases:
        x, y = rng.uniform(lo, hi, size=2)
        return lambda t: (np.full_like(t, x), np.full_like(t, y))
    if caption.motion == "bounces":
        amp = rng.uniform(*BOUNCE_SHARE) * span
        x, y0 = rng.uniform(lo, hi), rng.uniform(lo + amp, hi)
        return lambda t: (np.full_like(t, x), y0 - amp * np.abs(np.sin(2 * np.pi * t)))
    share = LEG_SHARE["two_phase" if len(phases) > 1 else "single"]
    legs = [np.array(DIRECTION_VECTORS[d], float) * rng.uniform(*share) * span for d in phases]
    # Start anywhere that keeps every corner of the path inside [lo, hi].
    corners = np.cumsum([np.zeros(2)] + legs, axis=0)            # (n_legs + 1, 2) offsets
    start = rng.uniform(lo - corners.min(axis=0), hi - corners.max(axis=0))
    lengths = np.array([np.linalg.norm(leg) for leg in legs])
    knots = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])  # constant speed

    def p(t):
        xs = np.interp(t, knots, start[0] + corners[:, 0])
        ys = np.interp(t, knots, start[1] + corners[:, 1])
        return xs, ys
    return p


def _background(side: int, textured: bool, rng: np.random.Generator) -> np.ndarray:
    bg = np.empty((side, side, 3), np.uint8)
    bg[:] = BACKGROUND_RGB
    if textured:
        # Low-frequency dark noise, static over the clip, never as bright as an object.
        coarse = rng.uniform(-14, 14, size=(6, 6, 3)).astype(np.float32)
        fine = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
        bg = np.clip(bg.astype(np.float32) + fine, 0, 60).astype(np.uint8)
    return bg


def coverage(side: int, shape: str, x: float, y: float, r: float) -> np.ndarray:
    """Share (0..1, float32 (side, side)) of each pixel covered by the shape centred at (x, y).

    Drawn at 4x with 1/16-pixel vertices and averaged down: OpenCV's own
    anti-aliased polygon fill snaps vertical positions to whole pixels, which
    would make slow vertical moves stall and hop.
    """
    k, s = _SUPERSAMPLE, 1 << _SHIFT
    canvas = np.zeros((side * k, side * k), np.uint8)
    if shape == "circle":
        centre = (round((x * k + (k - 1) / 2) * s), round((y * k + (k - 1) / 2) * s))
        cv2.circle(canvas, centre, round(r * k * s), 255, -1, cv2.LINE_AA, _SHIFT)
    else:
        if shape == "square":
            pts = [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
        elif shape == "triangle":
            pts = [(x, y - r), (x + r, y + r), (x - r, y + r)]
        else:
            raise ValueError(f"unknown shape {shape!r}")
        # Pixel centres sit at integer coordinates; a pixel spans [i - 0.5, i + 0.5).
        poly = np.round((np.array(pts) * k + (k - 1) / 2) * s).astype(np.int32)
        cv2.fillPoly(canvas, [poly], 255, cv2.LINE_AA, _SHIFT)
    return cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def draw_object(img: np.ndarray, shape: str, x: float, y: float, r: float, rgb) -> None:
    """Blend a filled shape of half-extent r centred at (x, y) into img, in place."""
    a = coverage(img.shape[0], shape, x, y, r)[..., None]
    img[:] = np.round(img * (1.0 - a) + np.asarray(rgb, np.float32) * a).astype(np.uint8)


def render(caption: Caption | str, seed: int = 0, size: int = 64, textured: bool = False) -> Clip:
    """Render one clip of `caption` at the native frame rate; the same seed gives the same clip."""
    cap = parse(caption) if isinstance(caption, str) else caption
    side = check_size(size)
    rng = np.random.default_rng([seed, 0x5EED])
    duration = rng.uniform(*DURATION_S[cap.speed])
    n = int(round(duration * NATIVE_FPS)) + 1
    r = HALF_EXTENT[cap.size] * side * rng.uniform(0.92, 1.08)
    xs, ys = _path(cap, side, r, rng)(np.linspace(0.0, 1.0, n))
    bg = _background(side, textured, rng)
    frames = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        frames[i] = bg
        draw_object(frames[i], cap.shape, xs[i], ys[i], r, COLOURS[cap.colour])
    return Clip(frames=frames, fps=float(NATIVE_FPS), caption=cap.text)


# ---------------------------------------------------------------- datasets
SPLITS = ("train", "val", "test")


def split_of(seed: int) -> str:
    """Split by seed: 90% train, 5% validation, 5% test."""
    k = seed % 20
    return "train" if k < 18 else ("val" if k == 18 else "test")


def caption_for(seed: int) -> Caption:
    """The caption a dataset clip of this seed shows. Training seeds never get a held-out pair."""
    pool = _caption_pool(split_of(seed) == "train")
    return pool[int(np.random.default_rng([seed, 0xCA9]).integers(len(pool)))]


_POOLS: dict[bool, list[Caption]] = {}


def _caption_pool(train: bool) -> list[Caption]:
    if train not in _POOLS:
        _POOLS[train] = [c for c in all_captions() if not (train and c.held_out)]
    return _POOLS[train]


def seeds_for_split(split: str, n: int, start: int = 0) -> list[int]:
    """The first n seeds >= start that belong to `split`."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    out, s = [], start
    while len(out) < n:
        if split_of(s) == split:
            out.append(s)
        s += 1
    return out


def prompts_word(split: str) -> str:
    """How reports name a split's prompts: "held-out" for the test split, the split's name otherwise."""
    return "held-out" if split == "test" else split
