"""Line charts as PNG with OpenCV alone (no matplotlib): drift curves and loss curves.

    line_plot({"hierarchical": (frames, acc), "one-stage": (frames, acc2)},
              "drift.png", title="Caption accuracy by frame", xlabel="frame", ylabel="accuracy",
              ylim=(0, 1))

The chart has a title, axes with tick labels at round numbers, a light grid,
axis labels and a legend to the right of the plot; series get distinct
colours (Tableau 10) and NaN values break a line. The file is written to a
temporary file beside the target and renamed over it, so a reader never sees
half a PNG.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from hiergen.fileio import write_bytes

# Tableau 10, as BGR.
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_INK, _GRID, _WHITE = (40, 40, 40), (225, 225, 225), (255, 255, 255)


def _nice_ticks(lo: float, hi: float, target: int = 6) -> np.ndarray:
    """Round tick positions (steps of 1, 2 or 5 x 10^k) covering [lo, hi]."""
    raw = (hi - lo) / max(target - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return np.arange(first, hi + step * 1e-9, step)


def _log_ticks(lo: float, hi: float) -> np.ndarray:
    """Tick values for a log axis over [lo, hi]: decades, 1-2-5 steps, or round linear steps."""
    decades = math.log10(hi / lo)
    mantissas = (1,) if decades > 3 else ((1, 2, 5) if decades > 1 else None)
    if mantissas is None:
        ticks = _nice_ticks(lo, hi, 6)
        return ticks[ticks > 0]
    ks = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = np.array([m * 10.0 ** k for k in ks for m in mantissas])
    return ticks[(ticks >= lo * (1 - 1e-9)) & (ticks <= hi * (1 + 1e-9))]


def _label(v: float, step: float) -> str:
    if abs(v) < step * 1e-6:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{decimals}f}"


def _text_size(text: str, scale: float, thick: int) -> tuple[int, int]:
    (w, h), _ = cv2.getTextSize(text, _FONT, scale, thick)
    return w, h


def _put(img, text, org, scale, thick=1, colour=_INK) -> None:
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, colour, thick, cv2.LINE_AA)


def _range(values: np.ndarray, pad: float) -> tuple[float, float]:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi - lo < 1e-12:
        lo, hi = lo - max(abs(lo), 1.0) * 0.5, hi + max(abs(hi), 1.0) * 0.5
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike,
              title: str, xlabel: str, ylabel: str, ylim: tuple[float, float] | None = None,
              logy: bool = False, size: tuple[int, int] = (900, 540)) -> Path:
    """Draw one line per named (xs, ys) series and write the chart to `path` as PNG.

    `ylim` fixes the y range (e.g. (0, 1) for accuracies); `logy` plots y on a
    log10 scale (loss curves); `size` is the plot's (width, height) in pixels
    before the legend column is added.
    """
    if not series:
        raise ValueError("line_plot() needs at least one series")
    data = {}
    for name, (xs, ys) in series.items():
        x, y = np.asarray(xs, float).ravel(), np.asarray(ys, float).ravel()
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"series {name!r} has {len(x)} x values and {len(y)} y values; "
                             "give each series equally many, at least one")
        if logy:
            if np.any(y[np.isfinite(y)] <= 0):
                raise ValueError(f"series {name!r} has values <= 0; a log-scale plot needs positive values")
            y = np.log10(y)
        data[name] = (x, y)
    if ylim is not None and (len(ylim) != 2 or not ylim[0] < ylim[1] or (logy and ylim[0] <= 0)):
        raise ValueError(f"ylim must be (low, high) with low < high (and low > 0 with logy), got {ylim!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: folder {path.parent} does not exist (create it first)")

    all_x = np.concatenate([x for x, _ in data.values()])
    all_y = np.concatenate([y for _, y in data.values()])
    if not np.isfinite(all_y).any():
        raise ValueError("every y value is NaN or infinite; nothing to plot")
    x_lo, x_hi = _range(all_x, 0.0)
    if ylim is not None:
        y_lo, y_hi = (math.log10(ylim[0]), math.log10(ylim[1])) if logy else (float(ylim[0]), float(ylim[1]))
    else:
        y_lo, y_hi = _range(all_y[np.isfinite(all_y)], 0.05)

    # Layout: title on top, y labels left, x labels below, legend column on the right.
    s = 0.55                                                   # base font scale
    legend_w = 40 + max(_text_size(n, s, 1)[0] for n in data) + 20
    width, height = size[0] + legend_w, size[1]
    left, right, top, bottom = 88, legend_w + 24, 52, 64
    img = np.full((height, width, 3), _WHITE, np.uint8)
    x0, x1, y0, y1 = left, width - right, top, height - bottom   # plot box in pixels

    def px(x):
        return x0 + (np.asarray(x) - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def py(y):
        return y1 - (np.asarray(y) - y_lo) / (y_hi - y_lo) * (y1 - y0)

    # Grid, ticks and tick labels.
    xt = _nice_ticks(x_lo, x_hi, 8)
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
    for v in xt:
        p = int(round(px(v)))
        cv2.line(img, (p, y0), (p, y1), _GRID, 1)
        cv2.line(img, (p, y1), (p, y1 + 5), _INK, 1)
        lab = _label(v, xstep)
        tw, th = _text_size(lab, s * 0.85, 1)
        _put(img, lab, (p - tw / 2, y1 + 10 + th), s * 0.85)
    if logy:
        ticks = _log_ticks(10.0 ** y_lo, 10.0 ** y_hi)
        yt, ylabels = np.log10(ticks), [f"{t:g}" for t in ticks]
    else:
        yt = _nice_ticks(y_lo, y_hi, 7)
        ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
        ylabels = [_label(v, ystep) for v in yt]
    for v, lab in zip(yt, ylabels):
        p = int(round(py(v)))
        cv2.line(img, (x0, p), (x1, p), _GRID, 1)
        cv2.line(img, (x0 - 5, p), (x0, p), _INK, 1)
        tw, th = _text_size(lab, s * 0.85, 1)
        _put(img, lab, (x0 - 10 - tw, p + th / 2), s * 0.85)
    cv2.rectangle(img, (x0, y0), (x1, y1), _INK, 1)

    # Series, clipped to the plot box; NaN breaks a line.
    plot = img[y0:y1 + 1, x0:x1 + 1]
    for i, (name, (x, y)) in enumerate(data.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = np.stack([px(x) - x0, py(y) - y0], axis=1)
        ok = np.isfinite(pts).all(axis=1)
        runs = np.split(np.arange(len(pts)), np.flatnonzero(np.diff(ok.astype(int)) != 0) + 1)
        for run in runs:
            if not ok[run[0]]:
                continue
            seg = np.round(pts[run] * 16).astype(np.int32)          # 4 fractional bits
            cv2.polylines(plot, [seg], False, colour, 2, cv2.LINE_AA, shift=4)
            if len(x) <= 40:                                        # few points: mark them
                for q in seg:
                    cv2.circle(plot, (int(q[0]), int(q[1])), 3 * 16, colour, -1, cv2.LINE_AA, shift=4)

    # Title, axis labels (the y label rotated), legend.
    tw, th = _text_size(title, s * 1.3, 2)
    _put(img, title, ((x0 + x1) / 2 - tw / 2, 18 + th), s * 1.3, 2)
    tw, th = _text_size(xlabel, s, 1)
    _put(img, xlabel, ((x0 + x1) / 2 - tw / 2, height - 14), s)
    tw, th = _text_size(ylabel, s, 1)
    strip = np.full((th + 10, tw + 4, 3), _WHITE, np.uint8)
    _put(strip, ylabel, (2, th + 2), s)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    sy = int(max(0, min(height - strip.shape[0], (y0 + y1) / 2 - strip.shape[0] / 2)))
    img[sy:sy + strip.shape[0], 12:12 + strip.shape[1]] = strip

    lx, ly = x1 + 24, y0 + 8
    for i, name in enumerate(data):
        colour = PALETTE[i % len(PALETTE)]
        yy = ly + 26 * i + 10
        cv2.line(img, (lx, yy), (lx + 28, yy), colour, 3, cv2.LINE_AA)
        tw, th = _text_size(name, s, 1)
        _put(img, name, (lx + 38, yy + th / 2), s)

    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode the chart for {path}")
    return write_bytes(path, png.tobytes())
