"""Where the hierarchical chain loses motion: the same prompts and seeds cut after each stage.

    python -m hiergen.tools.chain --package models/default --split test --prompts 200      # docs/evaluation.md
    python -m hiergen.tools.chain --split val --prompts 128 --frames 5 --guidance t2i=1.5   # tune on validation

Each prompt's video is generated with the prompt's seed at 5 frames (frame 1
from the backbone, then the keyframes), 9, 17 and 33 (one interpolation round
more each); the keyframes are the same tokens at every length, so the rows
show what each stage adds or loses. With --true-frame1 the rendered clip's
frame 1 replaces the backbone's (isolates the keyframe model, as `hiergen
eval --keyframes-alone` does at 5 frames). --guidance STAGE=SCALE and --top-k
override the package's plan for this run only: tune them on the validation
split (--split val), report on the test split (the prompts `make eval` scores).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from hiergen.errors import UsageError
from hiergen.runtime.plan import FRAME_COUNTS, Plan

STAGES = tuple(Plan().guidance)                 # the stages a plan guides: t2i, keyframe, interp


def parse_guidance(items: list[str]) -> dict[str, float]:
    """["t2i=1.5", ...] -> {"t2i": 1.5}; a clear error for anything else."""
    out = {}
    for item in items:
        stage, sep, value = item.partition("=")
        if not sep or stage not in STAGES:
            raise UsageError(f"--guidance {item!r}: write STAGE=SCALE with STAGE one of {', '.join(STAGES)}, "
                             "e.g. --guidance keyframe=1.5")
        try:
            scale = float(value)
        except ValueError:
            raise UsageError(f"--guidance {item!r}: {value!r} is not a number") from None
        if scale < 1.0:
            raise UsageError(f"--guidance {item!r}: the scale must be >= 1 (1 = no guidance)")
        out[stage] = scale
    return out


def plan_with(plan, guidance: dict[str, float], top_k: int | None):
    """The package's plan with this run's overrides."""
    changes = {}
    if guidance:
        changes["guidance"] = {**plan.guidance, **guidance}
    if top_k is not None:
        changes["top_k"] = top_k
    return dataclasses.replace(plan, **changes) if changes else plan


# ------------------------------------------------------------ worker side
_PIPE = {}


def _init(package, guidance, top_k):
    import warnings
    warnings.simplefilter("ignore")            # synthetic captions have no unknown words
    from hiergen.runtime.pipeline import Pipeline
    pipe = Pipeline.load(package, backend="cpu", threads=1)
    pipe.plan = plan_with(pipe.plan, guidance, top_k)
    _PIPE["pipe"] = pipe


def _task(job):
    from hiergen.analyze import analyze_clip
    from hiergen.clip import Clip
    from hiergen.synth import render
    caption, seed, frame_counts, true_frame1 = job
    pipe = _PIPE["pipe"]
    init = render(caption, seed=seed, size=pipe.codec.image_size).frames[0] if true_frame1 else None
    out = {}
    for n in frame_counts:
        v = pipe.generate(caption, frames=n, seed=seed, init_image=init)
        out[n] = analyze_clip(Clip(frames=v.frames, fps=v.fps, caption=caption))
    return out


# ------------------------------------------------------------ driver
def run_chain(package: str | None, split: str, n_prompts: int, frame_counts=FRAME_COUNTS,
              guidance: dict[str, float] | None = None, top_k: int | None = None, true_frame1: bool = False,
              jobs: int | None = None) -> dict[int, object]:
    """{frames: EvalReport} over the split's first n_prompts prompts, each with its own seed."""
    from hiergen.analyze import score_reports
    from hiergen.progress import progress
    from hiergen.synth import caption_for, seeds_for_split
    seeds = seeds_for_split(split, n_prompts)
    captions = [str(caption_for(s)) for s in seeds]
    work = [(c, s, tuple(frame_counts), true_frame1) for c, s in zip(captions, seeds)]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(work)))
    with ProcessPoolExecutor(jobs, initializer=_init, initargs=(package, guidance or {}, top_k)) as pool:
        results = list(progress(pool.map(_task, work, chunksize=2), "generate + analyze", total=len(work),
                                unit="prompt"))
    return {n: score_reports([r[n] for r in results], captions) for n in frame_counts}


def table(reports: dict[int, object], true_frame1: bool = False) -> str:
    first = "a TRUE frame 1" if true_frame1 else "frame 1 from the backbone"
    names = {5: f"{first} + keyframes (5 frames)", 9: "+ interpolation round 1 (9 frames)",
             17: "+ round 2 (17 frames)", 33: "+ round 3 (33 frames)"}
    lines = ["| stage | motion | two-phase motion | colour | shape | size |", "|---|---:|---:|---:|---:|---:|"]
    for n, r in reports.items():
        tp = f"{100 * r.two_phase_motion:.1f}" if r.two_phase_motion is not None else "-"
        a = r.accuracy
        lines.append(f"| {names[n]} | {100 * a['motion']:.1f} | {tp} | {100 * a['colour']:.1f} | "
                     f"{100 * a['shape']:.1f} | {100 * a['size']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hiergen.tools.chain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default=None, help="model package (default: the shipped models/default)")
    p.add_argument("--split", default="val", choices=("val", "test"),
                   help="prompts of this synthetic split (default val: tune there, report on test)")
    p.add_argument("--prompts", type=int, default=64, help="the split's first N prompts (default 64)")
    p.add_argument("--frames", type=int, nargs="+", default=list(FRAME_COUNTS), choices=FRAME_COUNTS,
                   help="cut the chain after these lengths (default 5 9 17 33)")
    p.add_argument("--guidance", action="append", default=[], metavar="STAGE=SCALE",
                   help="classifier-free guidance of one stage (t2i, keyframe, interp) for this run; repeatable")
    p.add_argument("--top-k", type=int, default=None, help="sampler top-k for every stage (default: the plan's)")
    p.add_argument("--true-frame1", action="store_true", help="start from the rendered clip's frame 1")
    p.add_argument("--jobs", type=int, default=None, help="worker processes, one thread each (default: cores)")
    p.add_argument("--json", default=None, help="also write the reports here")
    a = p.parse_args(argv)
    try:
        guidance = parse_guidance(a.guidance)
        if a.prompts < 1:
            raise UsageError("--prompts must be at least 1")
        if a.top_k is not None and a.top_k < 1:
            raise UsageError("--top-k must be at least 1 (1 = greedy)")
    except UsageError as e:
        p.error(str(e))
    reports = run_chain(a.package, a.split, a.prompts, sorted(set(a.frames)), guidance, a.top_k, a.true_frame1,
                        a.jobs)
    print(f"{a.prompts} {a.split} prompts, package {a.package or 'models/default'}"
          f"{', guidance ' + str(guidance) if guidance else ''}{f', top-k {a.top_k}' if a.top_k else ''}")
    print(table(reports, a.true_frame1))
    if a.json:
        from hiergen.fileio import write_json
        write_json(a.json, {"source": {"package": a.package, "split": a.split, "prompts": a.prompts,
                                       "guidance": guidance, "top_k": a.top_k, "true_frame1": a.true_frame1},
                            **{str(n): r.to_json() for n, r in reports.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
