"""Decode steps of several packages timed in isolation, interleaved step by step in one process.

    python -m hiergen.calibration.speed models/default out/int8-cpu out/fp16 out/int8-qdq --json out/steps.json

A whole-video bench on a shared 2-core machine drifts by a third within
minutes; this probe takes the drift out of the comparison: each stage's
decode step (the decode graph at the stage's batch, on the sessions the
runtime would use: one intra-op thread below batch 8) runs with the same
captured inputs (real decode-step inputs from generating a training-split
prompt through the runtime), the packages one after the other, step by step,
`steps` times; medians per package and stage, and each package's speed-up
over the first one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np

STAGES = {"t2i": ("t2i", 1), "keyframe": ("keyframe", 1), "interp1": ("interp", 2), "interp2": ("interp", 4),
          "interp3": ("interp", 8)}


def step_inputs(package: str, seed: int = 0) -> dict[str, dict]:
    """stage -> one captured decode-graph feed at the stage's batch."""
    from hiergen.calibration.capture import calibration_prompts, capture
    samples = capture(package, calibration_prompts(2, seed), seed, keep=64)
    out = {}
    for stage, (model, batch) in STAGES.items():
        feeds = [f for f in samples[f"{model}_decode"] if f["tokens"].shape[0] == batch]
        if feeds:
            out[stage] = feeds[len(feeds) // 2]
    return out


def time_steps(packages: list[str], steps: int = 300, seed: int = 0) -> dict:
    from hiergen.runtime.backend import SINGLE_THREAD_BELOW, session
    from hiergen.runtime.package import open_package
    feeds = step_inputs(packages[0], seed)
    times: dict[str, dict[str, list[float]]] = {p: {s: [] for s in feeds} for p in packages}
    for stage, feed in feeds.items():
        model, batch = STAGES[stage]
        runs = []
        for p in packages:
            m = open_package(p)
            spec = m.fragments[m.fragment(model, "step").decode]
            sess = session(Path(p), spec, ["CPUExecutionProvider"], 1 if batch < SINGLE_THREAD_BELOW else None)
            f = {t.name: feed[t.name].astype(np.dtype(t.dtype)) for t in spec.inputs}
            sess.run(None, f)                                          # warm up
            runs.append((p, sess, f))
        for _ in range(steps):
            for p, sess, f in runs:
                t = time.perf_counter()
                sess.run(None, f)
                times[p][stage].append(time.perf_counter() - t)
    base = packages[0]
    med = {p: {s: 1000 * median(v) for s, v in st.items()} for p, st in times.items()}
    return {"steps": steps, "median_ms": med,
            "speedup": {p: {s: med[base][s] / med[p][s] for s in med[p]} for p in packages[1:]}}


def markdown(r: dict) -> str:
    stages = list(next(iter(r["median_ms"].values())))
    lines = [f"Decode step, median of {r['steps']} interleaved runs (ms; speed-up over the first package)", "",
             "| package | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for p, st in r["median_ms"].items():
        sp = r["speedup"].get(p)
        lines.append(f"| {p} | " + " | ".join(f"{st[s]:.3f}" + (f" ({sp[s]:.2f}x)" if sp else "") for s in stages)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hiergen.calibration.speed", description=__doc__.split("\n")[0])
    p.add_argument("packages", nargs="+", help="the first is the reference (fp32)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--json")
    p.add_argument("--markdown")
    a = p.parse_args(argv)
    r = time_steps(a.packages, a.steps)
    text = markdown(r)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
