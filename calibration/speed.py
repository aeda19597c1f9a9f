"""Decode steps of several packages timed in isolation, interleaved in blocks of steps in one process.

    python -m hiergen.calibration.speed models/default out/int8-cpu out/fp16 out/int8-qdq --json out/steps.json

A whole-video bench on a shared 2-core machine drifts by a third within
minutes; this probe takes the drift out of the comparison: each stage's
decode step (the decode graph at the stage's batch, on the sessions the
runtime would use: one intra-op thread below batch 8) runs with the same
captured inputs (real decode-step inputs from generating a training-split
prompt through the runtime), bound to host buffers as the runtime's arena
binds them, the packages taking turns in blocks of 25 steps (the runtime
runs one graph step after step, its weights in the CPU's caches; taking turns
at every step would time cold caches), `steps` steps each; medians per
package and stage, and each package's speed-up over the first one.

    python -m hiergen.calibration.speed models/default out/int8-cpu --profile keyframe

prints instead ONNX Runtime's per-op-type kernel time of that stage's decode
graph in each package: where a step's time goes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np


def step_inputs(package: str, stages: dict[str, tuple[str, int]], seed: int = 0) -> dict[str, dict]:
    """stage -> one captured decode-graph feed at the stage's batch (every stage of `stages` has one)."""
    from hiergen.calibration.capture import calibration_prompts, capture
    samples = capture(package, calibration_prompts(2, seed), seed, keep=64)
    out = {}
    for stage, (model, batch) in stages.items():
        feeds = [f for f in samples[f"{model}_decode"] if f["tokens"].shape[0] == batch]
        if not feeds:
            raise RuntimeError(f"no captured {model} decode step at batch {batch} for {stage}: "
                               f"the package's plan and the capture disagree")
        out[stage] = feeds[len(feeds) // 2]
    return out


BLOCK = 25     # consecutive steps of one package: the runtime runs a graph step after step, its weights in cache


def decode_session(package: str, model: str, batch: int, profile: str | None = None):
    """(session, spec) of `model`'s decode graph in `package`, with the threads the runtime gives `batch`."""
    from hiergen.runtime.backend import SINGLE_THREAD_BELOW, session
    from hiergen.runtime.package import open_package
    m = open_package(package)
    spec = m.fragments[m.fragment(model, "step").decode]
    threads = 1 if batch < SINGLE_THREAD_BELOW else None
    return session(Path(package), spec, ["CPUExecutionProvider"], threads, profile=profile), spec


def graph_inputs(spec, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A captured feed cast to the graph's input dtypes (float16 caches for an fp16 package)."""
    return {t.name: np.ascontiguousarray(feed[t.name], np.dtype(t.dtype)) for t in spec.inputs}


def bound(sess, spec, feed: dict[str, np.ndarray]):
    """(IO binding, input buffers, output buffers): `feed` (cast to the graph's input dtypes) and host output
    buffers bound as the runtime's arena binds a decode step, so the timed run neither converts inputs nor
    allocates outputs. Keep the buffers as long as the binding: it holds their addresses, not them."""
    from hiergen.runtime.arena import _bind_host
    inputs = graph_inputs(spec, feed)
    outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))     # shapes; warm-up
    io = sess.io_binding()
    for name, arr in inputs.items():
        _bind_host(io.bind_input, name, arr)
    for name, arr in outputs.items():
        _bind_host(io.bind_output, name, arr)
    return io, inputs, outputs


def time_steps(packages: list[str], steps: int = 300, seed: int = 0) -> dict:
    from hiergen.runtime.package import open_package
    from hiergen.runtime.plan import stage_batches
    stages = stage_batches(open_package(packages[0]).plan)
    feeds = step_inputs(packages[0], stages, seed)
    times: dict[str, dict[str, list[float]]] = {p: {s: [] for s in feeds} for p in packages}
    for stage, feed in feeds.items():
        model, batch = stages[stage]
        runs = []
        for p in packages:
            sess, spec = decode_session(p, model, batch)
            runs.append((p, sess, *bound(sess, spec, feed)))
        for _ in range(max(1, steps // BLOCK)):
            for p, sess, io, *_buffers in runs:
                for i in range(BLOCK + 1):              # the first step of a block reloads the caches: not timed
                    t = time.perf_counter()
                    sess.run_with_iobinding(io)
                    if i:
                        times[p][stage].append(time.perf_counter() - t)
    base = packages[0]
    med = {p: {s: 1000 * median(v) for s, v in st.items()} for p, st in times.items()}
    return {"steps": steps, "block": BLOCK, "median_ms": med,
            "speedup": {p: {s: med[base][s] / med[p][s] for s in med[p]} for p in packages[1:]}}


def profile_ops(packages: list[str], stage: str, steps: int = 300, seed: int = 0) -> dict:
    """ONNX Runtime's profiler on one stage's decode graph of each package (same captured feed, `steps`
    runs, the packages taking turns in blocks of BLOCK as in time_steps, so the machine's drift falls on
    all alike): per package the kernel time per run of each op type (us), after ONNX Runtime's graph
    optimisation. The profiler's own cost inflates every node alike: compare shares, not the step."""
    import tempfile
    from collections import Counter
    from hiergen.runtime.package import open_package
    from hiergen.runtime.plan import stage_batches
    stages = stage_batches(open_package(packages[0]).plan)
    if stage not in stages:
        raise ValueError(f"--profile {stage!r}: choose one of {', '.join(stages)}")
    model, batch = stages[stage]
    feed = step_inputs(packages[0], {stage: stages[stage]}, seed)[stage]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i, p in enumerate(packages):
            sess, spec = decode_session(p, model, batch, profile=str(Path(tmp) / f"p{i}"))
            runs.append((p, sess, graph_inputs(spec, feed)))
        done = 0
        while done < steps:
            block = min(BLOCK, steps - done)
            for _, sess, inputs in runs:
                for _ in range(block):
                    sess.run(None, inputs)
            done += block
        for p, sess, _ in runs:
            events = json.loads(Path(sess.end_profiling()).read_text())
            us, nodes = Counter(), Counter()
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    us[e["args"]["op_name"]] += e["dur"] / steps
                    nodes[e["args"]["op_name"]] += 1
            out[p] = {op: {"us": t, "nodes": nodes[op] // steps} for op, t in us.most_common()}
    return {"stage": stage, "batch": batch, "steps": steps, "ops": out}


def profile_markdown(r: dict) -> str:
    pk = list(r["ops"])
    ops = list(dict.fromkeys(op for p in pk for op in r["ops"][p]))
    lines = [f"Kernel time per {r['stage']} decode step (batch {r['batch']}), us per op type (nodes), "
             f"ONNX Runtime's profiler, {r['steps']} runs", "",
             "| op | " + " | ".join(pk) + " |", "|---|" + "---:|" * len(pk)]
    for op in ops:
        lines.append(f"| {op} | " + " | ".join(f"{r['ops'][p][op]['us']:.1f} ({r['ops'][p][op]['nodes']})"
                                               if op in r["ops"][p] else "-" for p in pk) + " |")
    lines.append("| all | " + " | ".join(f"{sum(v['us'] for v in r['ops'][p].values()):.1f} "
                                         f"({sum(v['nodes'] for v in r['ops'][p].values())})" for p in pk) + " |")
    return "\n".join(lines) + "\n"


def markdown(r: dict) -> str:
    stages = list(next(iter(r["median_ms"].values())))
    lines = [f"Decode step in isolation, median of {r['steps']} runs, the packages taking turns in blocks of "
             f"{r.get('block', BLOCK)} (ms; speed-up over the first package)", "",
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
    p.add_argument("--profile", metavar="STAGE",
                   help="instead: kernel time per op type of this stage's decode graph (t2i, keyframe, interp1...)")
    a = p.parse_args(argv)
    if a.profile:
        try:
            r = profile_ops(a.packages, a.profile, a.steps)
        except ValueError as e:
            p.error(str(e))
        text = profile_markdown(r)
    else:
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
