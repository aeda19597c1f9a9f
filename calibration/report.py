"""The precision picture and table: quality and speed of each flavour side by side, from the JSON that
`hiergen eval`, `hiergen agreement` and `hiergen bench --compare` wrote (make precision-eval).

    python -m hiergen.calibration.report --bench docs/precision/bench.json \\
        --agreement docs/precision/agreement.json --eval docs/precision/eval.json --out docs/precision/precision.png

Left panel: quality per flavour, the held-out prompts' `hiergen eval` scores
where given (colour, shape, size, motion, one object), else the teacher-forced
top-1 agreement with fp32 per stage. Right panel: speed and size, each
flavour's decode-step speed-up over fp32 per stage in the runtime (the bench's,
interleaved in one run; a black tick: the graph alone with hot caches, the
isolated probe calibration/speed.py, where given), the whole video's and its
weights as a share of fp32's. Grouped bars drawn with OpenCV, in
hiergen/plots.py's style.
"""
from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np

from hiergen.plots import PALETTE, _INK, _WHITE, _nice_ticks, _put

_GRID = (225, 225, 225)
EVAL_METRICS = ("colour", "shape", "size", "motion", "one object")
FLAVOURS = ("fp32", "fp16", "int8-cpu", "int8-qdq")        # one colour each, in both panels


def _colour(name: str, i: int):
    return PALETTE[FLAVOURS.index(name) if name in FLAVOURS else len(FLAVOURS) + i % 6]


def bar_panel(groups: list[str], series: dict[str, list[float]], title: str, ylabel: str,
              ylim: tuple[float, float], size: tuple[int, int] = (620, 420), ref: float | None = None,
              marks: dict[str, list[float | None]] | None = None) -> np.ndarray:
    """Grouped bars: one group per x label, one bar per series (NaN: no bar); `ref` draws a dashed level;
    `marks` (per series, like `series`) a black tick across a bar at a second value."""
    w, h = size
    img = np.full((h, w, 3), _WHITE, np.uint8)
    left, right, top, bottom = 64, 16, 40, 64
    lo, hi = ylim
    y_of = lambda v: int(round(top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))))   # noqa: E731
    for t in _nice_ticks(lo, hi):
        if lo <= t <= hi:
            cv2.line(img, (left, y_of(t)), (w - right, y_of(t)), _GRID, 1)
            _put(img, f"{t:g}", (8, y_of(t) + 5), 0.42)
    _put(img, title, (left, 24), 0.55, 1)
    _put(img, ylabel, (8, h - 8), 0.42)
    n = max(len(series), 1)
    gw = (w - left - right) / max(len(groups), 1)
    bw = max(int(gw * 0.8 / n), 2)
    for gi, g in enumerate(groups):
        x0 = left + gi * gw + gw * 0.1
        for si, (name, vals) in enumerate(series.items()):
            v = vals[gi]
            if v is None or not np.isfinite(v):
                continue
            x = int(x0 + si * bw)
            cv2.rectangle(img, (x, y_of(min(max(v, lo), hi))), (x + bw - 2, y_of(lo)), _colour(name, si), -1)
        for si, name in enumerate(series):
            m = (marks or {}).get(name, [])
            if gi < len(m) and m[gi] is not None and np.isfinite(m[gi]):
                x, y = int(x0 + si * bw), y_of(min(max(m[gi], lo), hi))
                cv2.line(img, (x - 1, y), (x + bw - 1, y), _INK, 2)
        _put(img, g, (int(x0), h - bottom + 18), 0.42)
    if ref is not None:
        for x in range(left, w - right, 10):
            cv2.line(img, (x, y_of(ref)), (x + 5, y_of(ref)), _INK, 1)
    cv2.rectangle(img, (left, top), (w - right, y_of(lo)), _INK, 1)
    for si, name in enumerate(series):                       # legend under the axis
        x = left + si * 140
        cv2.rectangle(img, (x, h - 30), (x + 12, h - 18), _colour(name, si), -1)
        _put(img, name, (x + 16, h - 19), 0.42)
    return img


def quality(agreement: dict | None, evaluation: dict | None, names: dict[str, str]) -> tuple:
    """(groups, series, title, ylabel, ylim) of the quality panel."""
    if evaluation:
        series = {}
        for flavour, key in names.items():
            r = evaluation.get(key)
            if r:
                series[flavour] = [100 * r["accuracy"][m] if m in r["accuracy"] else 100 * r["one_object_rate"]
                                   for m in EVAL_METRICS]
        return list(EVAL_METRICS), series, "quality: held-out prompts (hiergen eval)", "% correct", (0, 100)
    pk = agreement["packages"]
    stages = list(next(iter(pk.values()))["stages"])
    series = {r["precision"]: [100 * r["stages"][s]["top1"] for s in stages] for r in pk.values()}
    return stages, series, "quality: top-1 agreement with fp32 (teacher forcing)", "%", (80, 100)


def speed(bench: dict, steps: dict | None = None) -> tuple:
    """Per flavour: decode-step speed-ups in the runtime (the bench's), the whole video's (bench) and the
    weights as a share of fp32's; as marks, the isolated probe's step speed-ups where given."""
    from hiergen.runtime.package import load_manifest
    main = next(k for k in bench["backends"] if k != "torch")
    stages = list(bench["backends"][main]["stages"])
    isolated = {}
    for pkg, sp in (steps or {}).get("speedup", {}).items():
        isolated.setdefault(load_manifest(pkg).precision, sp)     # the first package of each precision
    series, marks = {}, {}
    for key, r in bench.get("vs_main", {}).items():
        p = bench["packages"][key]
        name = key.split(" ", 1)[-1]
        series[name] = [r.get(s) for s in stages] + [r["video"], p["weights"] / bench["packages"][main]["weights"]]
        if p["precision"] in isolated:
            marks[name] = [isolated[p["precision"]].get(s) for s in stages]
    what = "runtime steps (tick: graph alone)" if marks else "decode steps"
    return stages + ["video", "weights"], series, f"vs fp32: {what}, video, weights", "x", (0, 2), marks


def picture(bench: dict, agreement: dict | None, evaluation: dict | None, out: str, steps: dict | None = None) -> None:
    from hiergen.fileio import write_bytes
    names = {"fp32": "hierarchical", "fp16": "fp16", "int8-cpu": "int8-cpu", "int8-qdq": "int8-qdq"}
    g, s, t, yl, lim = quality(agreement, evaluation, names)
    left = bar_panel(g, s, t, yl, lim)
    g, s, t, yl, lim, marks = speed(bench, steps)
    right = bar_panel(g, s, t, yl, lim, ref=1.0, marks=marks)
    ok, png = cv2.imencode(".png", np.concatenate([left, right], axis=1))
    write_bytes(out, png.tobytes())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hiergen.calibration.report", description=__doc__.split("\n")[0])
    p.add_argument("--bench", required=True)
    p.add_argument("--agreement")
    p.add_argument("--eval")
    p.add_argument("--steps", help="python -m hiergen.calibration.speed's JSON: isolated decode-step speed-ups")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    load = lambda f: json.load(open(f)) if f else None     # noqa: E731
    picture(load(a.bench), load(a.agreement), load(a.eval), a.out, load(a.steps))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
