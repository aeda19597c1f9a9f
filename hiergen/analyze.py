"""The clip analyzer: read colour, shape, size and motion back from frames.

This is the project's quality meter (README, "Measuring"): it checks a clip
against its caption with OpenCV and numpy only (never torch), so the same
numbers come out for ground-truth renders, VQ-VAE reconstructions, generated
clips and MP4 files read back from disk.

Three levels, in data-flow order:
- `analyze_frame`: segment bright objects from the dark background, count
  them, and measure the largest: colour, shape, size, centroid.
- `analyze_clip`: majority attributes over the frames, the trajectory, its
  motion class (a caption motion string), speed and smoothness.
- `evaluate`: accuracies of a set of clips against captions (their own, or
  shuffled ones for the chance floor), per-frame drift curves, JSON and a
  markdown table.

Geometry is measured on a soft coverage map (0 = background, 1 = object)
rather than a binary mask, so sizes and positions stay sub-pixel accurate
in small frames and survive blurred or compressed edges. Every threshold is
relative to the frame side and derived from the renderer's rules in
hiergen/synth.py, which the comments cite.

Limits: objects that touch merge into one; below 32-pixel frames a small
object is about 3 pixels wide and its shape is a guess now and then.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from hiergen.captions import COLOURS, DIRECTION_VECTORS, SIZES, TWO_PHASE_MOTIONS, Caption, parse
from hiergen.clip import Clip
from hiergen.synth import BOUNCE_SHARE, DURATION_S, LEG_SHARE, path_span

# ---------------------------------------------------------------- thresholds
# Segmentation: background is dark (V <= 60 even when textured), objects bright
# (V >= 200). A pixel is object when its HSV value clears the frame's median
# (the background) by this much: roughly 30% coverage of the dimmest colour.
SEG_CONTRAST = 60
# Components smaller than this share of the frame are noise. The smallest
# object drawn (a small triangle, half-extent 0.09 * 0.92 of the side) covers
# 1.4% of the frame.
MIN_AREA_FRAC = 0.003
# small objects are ~0.18 of the side wide, large ones ~0.36 (synth.HALF_EXTENT).
SIZE_SPLIT = 0.26
# OpenCV's anti-aliased fill spreads each edge by about half a pixel, so the
# measured width of every drawn shape exceeds its true width by this much.
EDGE_PX = 1.2
# Coverage below this is compression ringing or texture, not object: cutting it
# keeps the third moment (skew) of small objects from following the noise.
COV_FLOOR = 0.12
# Shape from two blur-robust features of the coverage map:
# fill = area / (widest row * tallest column): square 1.0, circle pi/4, triangle 0.5;
# skew = vertical skewness: 0 for circle and square, -0.57 for the apex-up triangle.
TRIANGLE_SKEW = -0.2
SQUARE_FILL = 0.89
# Motion, in units of the frame side.
STILL_MAX = 0.10        # still objects wander < ~3%; every leg drawn covers >= ~22%
MIN_LEG = 0.15          # shortest straight leg that counts as a move (in between: no class)
AXIS_TOLERANCE = 0.58   # |minor| / |major| of a leg: within 30 degrees of an axis
FIT_TOLERANCE = 0.25    # largest deviation from the fitted legs, as a share of the shortest leg
BOUNCE_SIDEWAYS = 0.35  # a bounce's horizontal range is below this share of its vertical one
HYSTERESIS = 0.2        # reversals count only when the path retreats this share of its range
# Speed: travelled distance per second in units of the path span the renderer
# draws from (synth.path_span). Quick actions take 1-2 s, slow ones 4-8 s
# (synth.DURATION_S), and the path length depends on the motion class (one leg,
# two legs, or a bounce of four half-humps), so each class has its own split:
# the geometric mean of its slowest quick and its fastest slow speed.
def _speed_split(lo_len: float, hi_len: float) -> float:
    quick_hi_s, slow_lo_s = DURATION_S["quickly"][1], DURATION_S["slowly"][0]
    return ((lo_len / quick_hi_s) * (hi_len / slow_lo_s)) ** 0.5


SPEED_SPLIT = {"single": _speed_split(*LEG_SHARE["single"]),
               "two_phase": _speed_split(*(2 * v for v in LEG_SHARE["two_phase"])),
               "bounce": _speed_split(*(4 * v for v in BOUNCE_SHARE))}
# Smoothness: a step is a jump when longer than 3x the median step plus this.
JUMP_TOLERANCE = 0.02
DRIFT_BINS = 33         # normalised-time bins for the drift curve of clips of unequal length

_DIRECTION_OF = {v: k for k, v in DIRECTION_VECTORS.items()}


def _lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) RGB 0..255 -> (N, 3) CIE Lab (L 0..100)."""
    rgb = np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(-1, 3)


_COLOUR_NAMES = tuple(COLOURS)
_COLOUR_LAB = _lab(np.array([COLOURS[c] for c in _COLOUR_NAMES]))   # (n_colours, 3)


# ---------------------------------------------------------------- frames
@dataclass(frozen=True)
class FrameReport:
    """What one frame shows. Attributes describe the largest object; None when there is none."""
    n_objects: int
    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    centroid: tuple[float, float] | None = None   # (x, y) in pixels
    extent: float | None = None                   # object width / frame side
    fill: float | None = None                     # area / (width * height)
    skew: float | None = None                     # vertical skewness of the object's mass


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected one uint8 RGB frame (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame


def analyze_frame(frame_rgb: np.ndarray) -> FrameReport:
    """Count the objects in one RGB frame and measure the largest."""
    frame = _check_frame(frame_rgb)
    h, w, _ = frame.shape
    value = np.maximum(np.maximum(frame[..., 0], frame[..., 1]), frame[..., 2])   # HSV value, (H, W)
    step = max(1, min(h, w) // 64)                               # the median needs no more than 64x64 samples
    background = float(np.median(value[::step, ::step]))
    mask = (value > min(background + SEG_CONTRAST, 250)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    objects = np.flatnonzero(areas >= max(2.0, MIN_AREA_FRAC * h * w)) + 1
    if len(objects) == 0:
        return FrameReport(n_objects=0)
    largest = int(objects[np.argmax(areas[objects - 1])])
    return _measure(frame, labels, stats[largest], largest, n_objects=len(objects))


def _measure(frame: np.ndarray, labels: np.ndarray, stat: np.ndarray, label: int,
             n_objects: int) -> FrameReport:
    h, w, _ = frame.shape
    side = max(h, w)
    x, y, bw, bh = (int(v) for v in stat[:4])
    grow = max(2, round(side / 48))        # blurred edges reach this far past the mask
    pad = grow + 2                         # plus a background ring to read the local background
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
    rgb = frame[y0:y1, x0:x1].astype(np.float32)                 # (h', w', 3)
    lab_roi = labels[y0:y1, x0:x1]
    comp = (lab_roi == label).astype(np.uint8)
    support = cv2.dilate(comp, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)
    support &= (lab_roi == 0) | (lab_roi == label)               # never another object's pixels

    # Object colour: the eroded interior, away from blurred or bleeding edges.
    depth = max(1, round(0.15 * min(bw, bh)))
    interior = cv2.erode(comp, np.ones((2 * depth + 1, 2 * depth + 1), np.uint8)).astype(bool)
    if interior.sum() < 2:
        interior = cv2.erode(comp, np.ones((3, 3), np.uint8)).astype(bool)
    if interior.sum() < 2:                  # a few pixels wide: take its brightest half
        vals = rgb.max(axis=2)
        interior = comp.astype(bool) & (vals >= np.median(vals[comp.astype(bool)]))
    obj = np.median(rgb[interior], axis=0)                       # (3,)
    ring = ~support & (lab_roi == 0)
    bg = np.median(rgb[ring], axis=0) if ring.sum() >= 4 else np.median(
        frame[labels == 0].reshape(-1, 3), axis=0).astype(np.float32)

    # Coverage: each pixel's position on the line from background to object colour.
    d = obj - bg
    cov = ((rgb - bg) @ d) / max(float(d @ d), 1.0)
    cov = np.clip((cov - COV_FLOOR) / (1.0 - COV_FLOOR), 0.0, 1.0) * support   # (h', w')
    m = cv2.moments(cov.astype(np.float32))
    area = m["m00"]
    if area < 1.0:                          # the object is not brighter than its surround
        return FrameReport(n_objects=n_objects)
    width, height = float(cov.sum(axis=1).max()), float(cov.sum(axis=0).max())
    cx, cy = m["m10"] / area, m["m01"] / area
    skew = (m["mu03"] / area) / max(m["mu02"] / area, 1e-6) ** 1.5
    fill = area / max(width * height, 1e-6)
    extent = max(0.5 * (width + height) - EDGE_PX, 0.5) / side

    colour = _COLOUR_NAMES[int(np.argmin(((_COLOUR_LAB - _lab(obj)) ** 2).sum(axis=1)))]
    if skew < TRIANGLE_SKEW:
        shape = "triangle"
    else:
        shape = "square" if fill > SQUARE_FILL else "circle"
    return FrameReport(n_objects=n_objects, colour=colour, shape=shape,
                       size=SIZES[1] if extent > SIZE_SPLIT else SIZES[0],
                       centroid=(x0 + cx, y0 + cy), extent=extent, fill=fill, skew=skew)


# ---------------------------------------------------------------- clips
@dataclass(frozen=True, eq=False)
class ClipReport:
    """What a clip shows: majority attributes, trajectory and motion.

    `motion` is a caption motion string (captions.MOTIONS), or None when no
    object is seen in most frames or the path fits no motion class.
    """
    frames: tuple[FrameReport, ...]
    colour: str | None
    shape: str | None
    size: str | None
    trajectory: np.ndarray          # (T, 2) centroid (x, y) in pixels, NaN where no object
    motion: str | None
    speed: str | None               # "quickly" / "slowly"; None when still or unrecognised
    speed_value: float              # travelled distance per second / frame side
    smoothness: float               # share of steps that are not jumps; 1.0 = no jumps
    side: int

    def correct(self, caption: Caption | str) -> dict[str, bool]:
        """Per-attribute agreement with `caption` (motion: exact class, both phases in order)."""
        cap = parse(caption) if isinstance(caption, str) else caption
        return {"colour": self.colour == cap.colour, "shape": self.shape == cap.shape,
                "size": self.size == cap.size, "motion": self.motion == cap.motion,
                "speed": self.speed == cap.speed}

    def frame_correct(self, caption: Caption | str) -> np.ndarray:
        """(T,) bool: the frame shows exactly one object with the caption's colour, shape and size."""
        cap = parse(caption) if isinstance(caption, str) else caption
        return np.array([f.n_objects == 1 and f.colour == cap.colour and f.shape == cap.shape
                         and f.size == cap.size for f in self.frames], bool)


def _majority(values) -> str | None:
    values = [v for v in values if v is not None]
    return Counter(values).most_common(1)[0][0] if values else None


def analyze_clip(clip: Clip) -> ClipReport:
    """Analyze every frame of `clip`, then its trajectory."""
    frames = tuple(analyze_frame(f) for f in clip.frames)
    side = int(max(clip.frames.shape[1:3]))
    traj = np.array([f.centroid if f.centroid else (np.nan, np.nan) for f in frames], float)
    motion, travelled = _motion(traj / side)
    duration = clip.duration_s
    speed_value = travelled / duration if duration > 0 else 0.0
    speed = None
    if motion is not None and motion != "stays still" and duration > 0:
        # The renderer draws path lengths as shares of the span the centre can cover.
        extent = float(np.median([f.extent for f in frames if f.extent is not None]))
        span = max(0.2, path_span(side, extent * side / 2) / side)
        kind = "bounce" if motion == "bounces" else ("two_phase" if motion in TWO_PHASE_MOTIONS else "single")
        speed = "quickly" if speed_value / span > SPEED_SPLIT[kind] else "slowly"
    return ClipReport(frames=frames, colour=_majority(f.colour for f in frames),
                      shape=_majority(f.shape for f in frames), size=_majority(f.size for f in frames),
                      trajectory=traj, motion=motion, speed=speed, speed_value=speed_value,
                      smoothness=smoothness(traj, side), side=side)


def smoothness(trajectory: np.ndarray, side: int) -> float:
    """Share of frame-to-frame steps no longer than 3x the median step plus a tolerance.

    `trajectory` is (T, 2) in pixels, NaN where no object was seen; steps
    touching a missing frame are skipped. The tolerance is JUMP_TOLERANCE of
    the side but at least 1.5 pixels: OpenCV's anti-aliased fillPoly snaps
    vertices to whole rows, so squares and triangles move vertically in
    one-pixel hops that are not jumps.
    1.0 means no jumps.
    """
    steps = np.linalg.norm(np.diff(trajectory, axis=0), axis=1)
    steps = steps[np.isfinite(steps)]
    if len(steps) == 0:
        return 1.0
    return float(np.mean(steps <= 3.0 * np.median(steps) + max(JUMP_TOLERANCE * side, 1.5)))


def _fill_gaps(p: np.ndarray) -> np.ndarray | None:
    """Interpolate frames without an object; None when most frames have none."""
    ok = np.isfinite(p[:, 0])
    if ok.sum() < max(2, 0.5 * len(p)):
        return None
    t = np.arange(len(p))
    return np.stack([np.interp(t, t[ok], p[ok, k]) for k in range(2)], axis=1)


def _pivots(v: np.ndarray, h: float) -> list[int]:
    """Indices of the turning points of `v`, ignoring reversals smaller than `h` (a zigzag filter)."""
    lo = hi = 0
    i = 0
    for i in range(1, len(v)):                  # find the first move larger than h
        lo = i if v[i] < v[lo] else lo
        hi = i if v[i] > v[hi] else hi
        if v[hi] - v[lo] > h:
            break
    else:
        return [0]
    rising = hi > lo
    pivots, ext = [lo if rising else hi], (hi if rising else lo)
    for j in range(i + 1, len(v)):
        if (v[j] > v[ext]) == rising and v[j] != v[ext]:
            ext = j
        elif abs(v[j] - v[ext]) > h:
            pivots.append(ext)
            rising, ext = not rising, j
    pivots.append(ext)
    return pivots


def _direction(leg: np.ndarray) -> str | None:
    """The axis direction a leg (dx, dy) follows, or None when it is diagonal."""
    major = int(np.argmax(np.abs(leg)))
    if leg[major] == 0 or abs(leg[1 - major]) > AXIS_TOLERANCE * abs(leg[major]):
        return None
    unit = [0, 0]
    unit[major] = int(np.sign(leg[major]))
    return _DIRECTION_OF[tuple(unit)]


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points p (..., 2) to the segments a-b (broadcast)."""
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def _monotone(p: np.ndarray, leg: np.ndarray) -> bool:
    """True when p advances along `leg` without turning back by more than HYSTERESIS of it."""
    length = float(np.linalg.norm(leg))
    along = (p - p[0]) @ (leg / length)
    return len(_pivots(along, HYSTERESIS * length)) <= 2


def _motion(points: np.ndarray) -> tuple[str | None, float]:
    """Motion class of a (T, 2) path in side units, and the distance travelled along it."""
    p = _fill_gaps(points)
    if p is None:
        return None, 0.0
    rng_x, rng_y = np.ptp(p, axis=0)
    if max(rng_x, rng_y) < STILL_MAX:
        return "stays still", 0.0

    # Bounce: mostly vertical, up-down-up-down (image y decreases going up).
    if rng_x < BOUNCE_SIDEWAYS * rng_y:
        piv = _pivots(p[:, 1], HYSTERESIS * rng_y)
        runs = np.diff(p[piv, 1])
        if len(runs) >= 3:
            humps = len(runs) == 4 and all(np.sign(runs) == (-1, 1, -1, 1))
            even = np.abs(runs).min() >= 0.3 * np.abs(runs).max()
            return ("bounces" if humps and even else None), float(np.abs(runs).sum())

    # Two straight legs: the corner is the frame that best splits the path.
    n = len(p)
    if n >= 3:
        ks = np.arange(1, n - 1)
        idx = np.arange(n)
        corner = p[ks][:, None, :]                                            # (K, 1, 2)
        d_first = _segment_distance(p[None], p[0], corner)                    # (K, n)
        d_second = _segment_distance(p[None], corner, p[-1])
        dist = np.where(idx[None] <= ks[:, None], d_first, d_second)
        k = int(ks[np.argmin((dist ** 2).sum(axis=1))])
        leg1, leg2 = p[k] - p[0], p[-1] - p[k]
        d1, d2 = _direction(leg1), _direction(leg2)
        short = min(np.linalg.norm(leg1), np.linalg.norm(leg2))
        if (d1 and d2 and short >= MIN_LEG and (d1 in ("left", "right")) != (d2 in ("left", "right"))
                and dist[k - 1].max() <= FIT_TOLERANCE * short
                and _monotone(p[:k + 1], leg1) and _monotone(p[k:], leg2)):
            # Put the corner where the two legs' lines cross, not at the nearest frame.
            first_horizontal = d1 in ("left", "right")
            c = np.array([np.median(p[k:, 0]), np.median(p[:k + 1, 1])]) if first_horizontal \
                else np.array([np.median(p[:k + 1, 0]), np.median(p[k:, 1])])
            return f"moves {d1} then {d2}", float(np.linalg.norm(c - p[0]) + np.linalg.norm(p[-1] - c))

    # One straight leg.
    net = p[-1] - p[0]
    length = float(np.linalg.norm(net))
    d = _direction(net) if length >= MIN_LEG else None
    if d and _segment_distance(p, p[0], p[-1]).max() <= FIT_TOLERANCE * length and _monotone(p, net):
        return f"moves {d}", length
    return None, float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


# ---------------------------------------------------------------- sets of clips
ATTRIBUTES = ("colour", "shape", "size", "motion", "speed")


@dataclass(frozen=True)
class EvalReport:
    """Agreement of a set of clips with captions; fractions in 0..1."""
    n: int
    accuracy: dict[str, float]                  # ATTRIBUTES -> fraction
    one_object_rate: float                      # frames with exactly one object
    by_frame: tuple[float, ...]                 # per-frame correctness, averaged over clips
    by_frame_basis: str                         # "index" or "normalised_time"
    smoothness: float                           # mean over clips that move
    two_phase_motion: float | None              # motion accuracy on two-phase captions
    held_out: dict[str, float] | None           # accuracy on held-out colour/shape pairs

    def to_json(self) -> dict:
        return {"n": self.n, "accuracy": dict(self.accuracy), "one_object_rate": self.one_object_rate,
                "by_frame": list(self.by_frame), "by_frame_basis": self.by_frame_basis,
                "smoothness": self.smoothness, "two_phase_motion": self.two_phase_motion,
                "held_out": dict(self.held_out) if self.held_out is not None else None}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def _accuracy(rows: list[dict[str, bool]]) -> dict[str, float]:
    return {a: float(np.mean([r[a] for r in rows])) for a in ATTRIBUTES}


def evaluate(clips: Sequence[Clip], captions: Sequence[Caption | str] | None = None,
             reports: Sequence[ClipReport] | None = None) -> EvalReport:
    """Score clips against captions (default: each clip's own caption).

    Pass other captions (e.g. shuffled) for the chance floor, and `reports` to
    reuse analyses already made of the same clips.
    """
    if len(clips) == 0:
        raise ValueError("evaluate() needs at least one clip")
    caps = [c.caption for c in clips] if captions is None else list(captions)
    if len(caps) != len(clips):
        raise ValueError(f"got {len(clips)} clips but {len(caps)} captions; pass one caption per clip")
    caps = [parse(c) if isinstance(c, str) else c for c in caps]
    if reports is None:
        reports = [analyze_clip(c) for c in clips]
    elif len(reports) != len(clips):
        raise ValueError(f"got {len(clips)} clips but {len(reports)} reports")
    return score_reports(reports, caps)


def score_reports(reports: Sequence[ClipReport], captions: Sequence[Caption | str]) -> EvalReport:
    """evaluate() for clips already analysed: one report and one caption per clip."""
    if len(reports) == 0 or len(reports) != len(captions):
        raise ValueError(f"need one caption per report, got {len(reports)} reports and {len(captions)} captions")
    caps = [parse(c) if isinstance(c, str) else c for c in captions]
    rows = [r.correct(c) for r, c in zip(reports, caps)]
    per_frame = [r.frame_correct(c).astype(float) for r, c in zip(reports, caps)]

    lengths = {len(f) for f in per_frame}
    if len(lengths) == 1:
        basis, by_frame = "index", np.mean(per_frame, axis=0)
    else:   # clips of unequal length: compare them at the same point of their action
        basis = "normalised_time"
        grid = np.linspace(0.0, 1.0, DRIFT_BINS)
        by_frame = np.mean([np.interp(grid, np.linspace(0.0, 1.0, len(f)), f) if len(f) > 1
                            else np.full(DRIFT_BINS, f[0]) for f in per_frame], axis=0)

    moving = [r.smoothness for r in reports if r.motion not in (None, "stays still")]
    two_phase = [row["motion"] for row, c in zip(rows, caps) if c.motion in TWO_PHASE_MOTIONS]
    held = [row for row, c in zip(rows, caps) if c.held_out]
    frames = [f.n_objects == 1 for r in reports for f in r.frames]
    return EvalReport(
        n=len(reports), accuracy=_accuracy(rows), one_object_rate=float(np.mean(frames)),
        by_frame=tuple(float(v) for v in by_frame), by_frame_basis=basis,
        smoothness=float(np.mean(moving if moving else [r.smoothness for r in reports])),
        two_phase_motion=float(np.mean(two_phase)) if two_phase else None,
        held_out=_accuracy(held) if held else None)


def shuffled_captions(captions: Sequence[Caption | str], seed: int = 0) -> list[str]:
    """The captions in a random order in which none stays at its own index (the chance floor)."""
    texts = [c.text if isinstance(c, Caption) else c for c in captions]
    order = np.random.default_rng(seed).permutation(len(texts))
    out = list(texts)
    for i, j in zip(order, np.roll(order, -1)):     # one random cycle through all positions
        out[i] = texts[j]
    return out


def format_table(reports: dict[str, EvalReport]) -> str:
    """A markdown table, one row per named report, figures in percent."""
    head = ["", "n", "colour", "shape", "size", "motion", "speed", "one object", "smoothness"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, r in reports.items():
        cells = [name, str(r.n)] + [f"{100 * r.accuracy[a]:.1f}" for a in ATTRIBUTES]
        cells += [f"{100 * r.one_object_rate:.1f}", f"{100 * r.smoothness:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
