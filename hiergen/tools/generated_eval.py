"""`hiergen eval --model PKG --prompts N`: generate videos for held-out prompts and score them.

    hiergen eval --model models/default --baseline out/baseline --prompts 200 \\
        --json docs/eval/generated.json --markdown docs/eval/generated.md \\
        --plot docs/eval/generated_by_frame.png --samples docs/eval/generated_samples.png

Prompts and seeds are those of the synthetic test split (seeds_for_split("test")):
captions the training data never held, the held-out colour/shape pairs among
them. Every method makes one 33-frame video per prompt with the prompt's seed
through ONNX Runtime (torch-free), and the clip analyzer reads it:
- hierarchical: the package's plan (keyframes, then interpolation rounds);
- frame-by-frame (overlap 1, 2): the baseline package's sequential model
  (trained at 16 fps only) slides a 5-frame window (runtime/baseline.py);
- any --ablation NAME=PKG: another package, hierarchical.
Ground truth (the same captions and seeds rendered) is the ceiling; the
hierarchical videos under shuffled captions are the floor. Videos are made in
--jobs worker processes, one ONNX Runtime thread each.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from hiergen.analyze import EvalReport, analyze_clip, format_table, score_reports, shuffled_captions
from hiergen.clip import Clip
from hiergen.progress import progress
from hiergen.synth import caption_for, prompts_word, render, seeds_for_split

FRAMES = 33


@dataclass(frozen=True)
class Method:
    name: str
    package: str | None         # None: the shipped package
    overlap: int = 0            # 0: hierarchical; 1..4: frame-by-frame with this many given frames
    true_keyframes: bool = False  # interpolate the rendered clip's 5 keyframes (isolates the interpolation model)
    keyframes_alone: bool = False  # the rendered clip's frame 1, then the keyframe stage only (5 frames)


# Names the report gives its other entries: a method named so would overwrite them.
REPORT_ENTRIES = ("ground truth (rendered)", "hierarchical, shuffled captions", "source")
TRUE_KEYFRAMES = "interpolation of true keyframes"
KEYFRAMES_ALONE = "keyframes alone (true frame 1)"


def methods_for(model: str | None, baseline: str | None, ablations: dict[str, str],
                true_keyframes: bool = False, keyframes_alone: bool = False) -> list[Method]:
    out = [Method("hierarchical", model)]
    if true_keyframes:
        out.append(Method(TRUE_KEYFRAMES, model, true_keyframes=True))
    if keyframes_alone:
        out.append(Method(KEYFRAMES_ALONE, model, keyframes_alone=True))
    if baseline:
        out += [Method("frame-by-frame (overlap 1)", baseline, 1), Method("frame-by-frame (overlap 2)", baseline, 2)]
    taken = {m.name for m in out} | set(REPORT_ENTRIES)
    if clash := [name for name in ablations if name in taken]:
        raise ValueError(f"ablation name {clash[0]!r} is taken by the report (its entries: "
                         f"{', '.join(sorted(taken))}): give the ablation another name")
    out += [Method(name, pkg) for name, pkg in ablations.items()]
    return out


# ------------------------------------------------------------ worker side
_PIPES: dict = {}


def _pipe(package: str | None):
    from hiergen.runtime.pipeline import Pipeline
    if package not in _PIPES:
        _PIPES[package] = Pipeline.load(package, backend="cpu", threads=1)
    return _PIPES[package]


def make_video(method: Method, caption: str, seed: int) -> tuple[np.ndarray, float]:
    """One video (FRAMES, H, W, 3) uint8 of `caption` by `method`, and its frame rate."""
    import warnings
    warnings.simplefilter("ignore")            # unknown-word warnings cannot happen for synthetic captions
    pipe = _pipe(method.package)
    if method.keyframes_alone:                 # isolates the keyframe model: does it follow the verb?
        clip = render(caption, seed=seed, size=pipe.codec.image_size)
        v = pipe.generate(caption, frames=5, seed=seed, init_image=clip.frames[0])
        return v.frames, v.fps
    if method.true_keyframes:
        clip = render(caption, seed=seed, size=pipe.codec.image_size)
        keys = clip.frames[np.round(np.linspace(0, clip.n_frames - 1, 5)).astype(int)]   # as training spreads them
        v = pipe.generate(caption, frames=FRAMES, seed=seed, keyframes=list(keys))
        return v.frames, v.fps
    if not method.overlap:
        v = pipe.generate(caption, frames=FRAMES, seed=seed)
        return v.frames, v.fps
    from hiergen.runtime.baseline import generate_frame_by_frame
    from hiergen.runtime.orchestrator import Request
    from hiergen.runtime.sampler import SamplerOptions
    plan = pipe.plan
    opts = SamplerOptions(temperature=plan.temperature, top_k=plan.top_k, top_p=plan.top_p, seed=seed)
    res = generate_frame_by_frame(Request(caption, pipe.tokenizer, 16, FRAMES, opts), pipe.models, plan,
                                  method.overlap)
    return pipe.codec.decode(res.tokens), res.fps


def _task(job):
    method, caption, seed, keep = job
    frames, fps = make_video(method, caption, seed)
    report = analyze_clip(Clip(frames=frames, fps=fps, caption=caption))
    return method.name, seed, report, frames if keep else None


# ------------------------------------------------------------ driver
def run(methods: list[Method], n_prompts: int, jobs: int | None = None, n_samples: int = 6, split: str = "test"):
    """Reports per method (plus ceiling and floor) and sample frames of the first prompts per method."""
    seeds = seeds_for_split(split, n_prompts)
    captions = [str(caption_for(s)) for s in seeds]
    work = [(m, c, s, i < n_samples) for m in methods for i, (c, s) in enumerate(zip(captions, seeds))]
    reports: dict[str, dict[int, object]] = {m.name: {} for m in methods}
    samples: dict[str, dict[int, np.ndarray]] = {m.name: {} for m in methods}
    jobs = jobs or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for name, seed, report, frames in progress(pool.map(_task, work, chunksize=4), "generate + analyze",
                                                   total=len(work), unit="video"):
            reports[name][seed] = report
            if frames is not None:
                samples[name][seed] = frames
    out: dict[str, EvalReport] = {}
    truth = [analyze_clip(render(c, seed=s)) for c, s in zip(captions, seeds)]
    out["ground truth (rendered)"] = score_reports(truth, captions)
    for m in methods:
        out[m.name] = score_reports([reports[m.name][s] for s in seeds], captions)
    hier = [reports["hierarchical"][s] for s in seeds]
    out["hierarchical, shuffled captions"] = score_reports(hier, shuffled_captions(captions))
    return out, {k: [v[s] for s in seeds if s in v] for k, v in samples.items()}, captions[:n_samples]


def sample_sheet(samples: list[np.ndarray], captions: list[str], every: int = 4) -> np.ndarray:
    """One row per prompt: every `every`-th frame under the caption."""
    from hiergen.video import contact_sheet
    rows = [contact_sheet(v[::every], c, cols=len(v[::every])) for v, c in zip(samples, captions)]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=250) for r in rows]
    return np.concatenate(rows, axis=0)


def summary_lines(reports: dict[str, EvalReport]) -> list[str]:
    lines = ["| | two-phase motion, both phases in order | held-out colour/shape pairs (colour, shape) |",
             "|---|---:|---:|"]
    for name, r in reports.items():
        tp = f"{100 * r.two_phase_motion:.1f}" if r.two_phase_motion is not None else "-"
        ho = (f"{100 * r.held_out['colour']:.1f}, {100 * r.held_out['shape']:.1f}" if r.held_out else "-")
        lines.append(f"| {name} | {tp} | {ho} |")
    return lines


def run_generated_eval(model: str | None, n_prompts: int, baseline: str | None = None,
                       ablations: dict[str, str] | None = None, jobs: int | None = None,
                       true_keyframes: bool = False,
                       json_path: str | None = None, markdown_path: str | None = None,
                       plot_path: str | None = None, samples_path: str | None = None, *,
                       keyframes_alone: bool = False, split: str = "test") -> int:
    from hiergen.fileio import write_json, write_text
    methods = methods_for(model, baseline, ablations or {}, true_keyframes, keyframes_alone)
    for m in methods:                            # fail before minutes of work, with the package's own message
        from hiergen.runtime.package import open_package
        from hiergen.runtime.pipeline import DEFAULT_PACKAGE
        open_package(m.package or DEFAULT_PACKAGE)
    reports, samples, captions = run(methods, n_prompts, jobs, split=split)
    table = format_table(reports) + "\n\n" + "\n".join(summary_lines(reports))
    print(table)
    if json_path:
        write_json(json_path, {**{k: r.to_json() for k, r in reports.items()},
                               "source": {"prompts": n_prompts, "split": split, "frames": FRAMES,
                                          "methods": [vars(m) for m in methods]}})
        print(f"wrote {json_path}")
    if markdown_path:
        write_text(markdown_path, table + "\n")
        print(f"wrote {markdown_path}")
    if plot_path:
        from hiergen.plots import line_plot
        series = {k: (list(range(1, len(r.by_frame) + 1)), list(r.by_frame)) for k, r in reports.items()
                  if "shuffled" not in k}
        line_plot(series, plot_path, f"generated videos, {n_prompts} {prompts_word(split)} prompts: frames showing one object "
                  "of the caption's colour, shape and size", "frame", "fraction correct", ylim=(0.0, 1.0))
        print(f"wrote {plot_path}")
    if samples_path:
        from hiergen.video import write_png
        write_png(sample_sheet(samples["hierarchical"], captions), samples_path)
        print(f"wrote {samples_path}")
    return 0
