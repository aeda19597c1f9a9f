"""`hiergen` command line: argument parsing only; each command calls typed functions.

Commands that need torch import it inside their handler, so `hiergen --help`,
`hiergen info`, `synth` and `eval` run on the base (torch-free) install.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hiergen.errors import EXIT_ERROR, EXIT_INTERRUPTED, HiergenError

EPILOG = """\
examples:
  hiergen generate a small red circle moves left slowly -o red.mp4     a video with the shipped model
  hiergen info                                         what this machine can run
  hiergen synth --caption "a small red circle moves left quickly" -o clip.mp4
  hiergen synth --n 2000 --out data/synth              a captioned training set
  hiergen eval --synth 500                             analyzer accuracy on ground truth
  hiergen train vqvae --out checkpoints/vqvae          train the frame tokenizer
  hiergen tokenize --data data/synth --vqvae checkpoints/vqvae/final.safetensors --out data/tokens
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; defaults are written into the help texts that have one."""


def _fail(msg: str) -> int:
    """Every command's one error style (hiergen/errors.py): the message on stderr, exit status 2."""
    print(f"hiergen: error: {msg}", file=sys.stderr)
    return EXIT_ERROR


# ---------------------------------------------------------------- info
def cmd_info(args) -> int:
    import json

    from hiergen.sysinfo import collect, format_info
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


# ---------------------------------------------------------------- synth
def cmd_synth(args) -> int:
    from hiergen.captions import CaptionError, parse
    from hiergen.data import DatasetError, write_synth_dataset
    from hiergen.runtime.video import VideoError, save_video
    from hiergen.synth import render

    if (args.caption is None) == (args.n is None):
        return _fail("give either --caption TEXT -o FILE (one preview clip) or --n N --out DIR (a dataset)")
    try:
        if args.caption is not None:
            if not args.output:
                return _fail("--caption needs -o FILE (.mp4, .gif or .png contact sheet)")
            clip = render(parse(args.caption), seed=args.seed, size=args.size, textured=args.textured)
            path = save_video(clip.frames, args.output, clip.fps, clip.caption, scale=args.scale)
            print(f"wrote {path}: {clip.n_frames} frames at {clip.fps:g} fps ({clip.duration_s:.2f} s), "
                  f"{args.size}x{args.size}: {clip.caption}")
            return 0
        if not args.out:
            return _fail("--n needs --out DIR")
        ds = write_synth_dataset(args.out, args.n, size=args.size, textured=args.textured,
                                 start_seed=args.seed, force=args.force)
        splits = {s: sum(r.split == s for r in ds.records) for s in ("train", "val", "test")}
        held = sum(r.held_out for r in ds.records)
        print(f"wrote {ds.root}: {len(ds)} clips ({splits['train']} train, {splits['val']} val, "
              f"{splits['test']} test; {held} with held-out colour/shape pairs)")
        return 0
    except (CaptionError, DatasetError, VideoError, ValueError) as e:
        return _fail(str(e))


def cmd_import_videos(args) -> int:
    from hiergen.data import DatasetError, write_video_dataset
    try:
        ds = write_video_dataset(args.folder, args.captions, args.out, size=args.size, force=args.force,
                                 strict_captions=args.strict)
    except (DatasetError, ValueError) as e:
        return _fail(str(e))
    print(f"wrote {ds.root}: {len(ds)} clips at 16 fps, {args.size}x{args.size}")
    return 0


# ---------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from hiergen.evaluation import EvalError, run_clip_eval
    if args.prompts is not None:
        return _eval_generated(args)
    try:
        return run_clip_eval(clips_dir=args.clips, n_synth=args.synth, split=args.split,
                             mp4_roundtrip=args.mp4_roundtrip, vqvae=args.vqvae, size=args.size,
                             textured=args.textured,
                             json_path=args.json, plot_path=args.plot, markdown_path=args.markdown)
    except EvalError as e:
        return _fail(str(e))


def _eval_generated(args) -> int:
    from hiergen.generated_eval import methods_for, run_generated_eval
    from hiergen.runtime.package import PackageError
    from hiergen.runtime.video import VideoError, check_writable
    if args.prompts < 1:
        return _fail(f"--prompts needs a positive number of prompts, got {args.prompts}")
    if args.jobs is not None and args.jobs < 1:
        return _fail(f"--jobs needs at least 1 worker process, got {args.jobs}")
    ablations = {}
    for a in args.ablation or []:
        name, sep, pkg = a.partition("=")
        if not sep or not name or not pkg:
            return _fail(f"--ablation takes NAME=PACKAGE, e.g. 'one fixed rate=out/fixed-rate'; got {a!r}")
        if name in ablations:
            return _fail(f"--ablation {name!r} is given twice ({ablations[name]}, {pkg}): give each its own name")
        ablations[name] = pkg
    try:
        methods_for(args.model, args.baseline, ablations, args.true_keyframes)
    except ValueError as e:
        return _fail(str(e))
    try:
        for out in (args.json, args.markdown, args.plot, args.samples):
            if out:
                check_writable(out)
        return run_generated_eval(args.model, args.prompts, args.baseline, ablations, args.jobs,
                                  args.true_keyframes, args.json, args.markdown, args.plot, args.samples)
    except (PackageError, VideoError) as e:
        return _fail(str(e))


# ---------------------------------------------------------------- training (torch)
def _needs_torch() -> str | None:
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return "this command needs PyTorch: install the training extra with `pip install 'hiergen[train]'` (or `make setup`)"
    return None


def cmd_train(args) -> int:
    if (msg := _needs_torch()):
        return _fail(msg)
    check_threads(args.threads)
    if args.model == "vqvae":
        from hiergen.training import commands
        return commands.cmd_train_vqvae(out=args.out, steps=args.steps, batch=args.batch, lr=args.lr,
                                        seed=args.seed, data=args.data, codebook=args.codebook,
                                        resume=not args.restart, textured_share=args.textured_share,
                                        ckpt_every=args.ckpt_every, precision=args.precision,
                                        threads=args.threads)
    from hiergen.config import Kind
    from hiergen.training.recipes import train_models
    from hiergen.training.train_transformer import TrainError
    if not args.tokens:
        return _fail(f"`hiergen train {args.model}` needs --tokens DIR (made by `hiergen tokenize`)")
    kinds = list(Kind) if args.model == "all" else [Kind(args.model)]
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    overrides = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "fixed_rate": args.fixed_rate,
                 "text_dropout": args.text_dropout, "init_from": args.init, "weights": args.weights,
                 "backbone_lr": args.backbone_lr, "schedule": args.schedule, "ckpt_every": args.ckpt_every,
                 "ckpt_minutes": args.ckpt_minutes, "probe_every": args.probe_every,
                 "probe_prompts": args.probe_prompts, "pretrained_backbone": False if args.random_backbone else None}
    try:
        train_models(args.tokens, args.out, kinds, overrides, seed=args.seed, restart=args.restart,
                     backbone=args.backbone, frozen=args.frozen, vqvae=args.vqvae)
    except (TrainError, ValueError, OSError) as e:
        return _fail(str(e))
    return 0


def cmd_tokenize(args) -> int:
    if (msg := _needs_torch()):
        return _fail(msg)
    check_threads(args.threads)
    if not 1 <= args.jobs <= 4 * (__import__("os").cpu_count() or 1):
        return _fail(f"--jobs must be 1 to 4 x the cores, got {args.jobs}")
    from hiergen.training import commands
    return commands.cmd_tokenize(data=args.data, vqvae=args.vqvae, out=args.out, threads=args.threads,
                                  jobs=args.jobs)


def cmd_vqvae_quality(args) -> int:
    if (msg := _needs_torch()):
        return _fail(msg)
    from hiergen.training import commands
    return commands.cmd_vqvae_quality(vqvae=args.vqvae, n_frames=args.n_frames, json_path=args.json,
                                      data=args.data, textured=args.textured)


def check_threads(threads: int | None) -> None:
    """1 .. 4 x the cores: more only adds contention (one run at --threads 1000 started 11,000 threads)."""
    import os

    from hiergen.runtime.options import OptionError
    most = 4 * (os.cpu_count() or 1)
    if threads is not None and not 1 <= threads <= most:
        raise OptionError(f"--threads must be 1 to {most} (4 x this machine's {most // 4} cores), got {threads}")


def read_prompts(path: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    from hiergen.runtime.pipeline import PromptError
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"cannot read --prompts {path}: {getattr(e, 'strerror', None) or e}") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not prompts:
        raise PromptError(f"--prompts {path} holds no prompt: write one per line")
    return prompts


def _jobs(args) -> list[tuple[str, list[str]]]:
    """(prompt, output files) per video: -o FILE for one prompt, or --prompts FILE into --out DIR."""
    import re

    from hiergen.runtime.options import OptionError
    if bool(args.prompt) == bool(args.prompts):
        raise OptionError("give one prompt (hiergen generate a small red circle moves left slowly -o out.mp4) "
                          "or --prompts FILE --out DIR, not both and not neither")
    if args.prompts:
        if not args.out:
            raise OptionError("--prompts FILE needs --out DIR for the videos")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        prompts = read_prompts(args.prompts)
        ext = Path(args.output).suffix if args.output else ".mp4"
        stems = [f"{i + 1:03d}-{re.sub(r'[^a-z0-9]+', '-', p.lower()).strip('-')[:60]}" for i, p in enumerate(prompts)]
        mains = [str(Path(args.out) / f"{stem}{ext}") for stem in stems]
    else:
        if args.out:
            raise OptionError("--out DIR goes with --prompts FILE; for one prompt use -o FILE")
        prompts, mains = [" ".join(args.prompt)], [args.output or "out.mp4"]
    jobs = []
    for prompt, main in zip(prompts, mains):
        outs = [main] + [str(Path(main).with_suffix(e)) for e, on in ((".gif", args.gif), (".png", args.sheet)) if on]
        jobs.append((prompt, list(dict.fromkeys(outs))))       # -o x.png --sheet: the sheet is written once
    return jobs


def _generate_and_save(args, load) -> int:
    """Shared by `generate` (ONNX Runtime) and `reference` (PyTorch): check everything, load, generate, write."""
    import json
    import warnings

    from hiergen.progress import Progress
    from hiergen.runtime.options import GenerationOptions, OptionError
    from hiergen.runtime.pipeline import check_prompt, read_user_images
    from hiergen.runtime.video import check_output
    from hiergen.tokenizer import TextTokenizer

    opts = GenerationOptions(frames=args.frames, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, strict=args.strict)
    check_threads(args.threads)
    if args.fps is not None and not 0 < args.fps <= 240:
        raise OptionError(f"--fps must be above 0 and at most 240, got {args.fps}")
    jobs = _jobs(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # unknown words are reported once, by generate below
        for prompt, outs in jobs:
            check_prompt(prompt, TextTokenizer.default(), args.strict)
            for out in outs:
                check_output(out)
    read_user_images(args.frames, args.init_image, args.keyframes)      # bad images fail before the load
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    pipe = load()
    bars: list[Progress] = []

    def progress(stage: str, n: int):
        if bars:
            bars[-1].close()
        bars.append(Progress(n, f"{stage:>9}", unit="tok", enabled=not args.quiet))
        return bars[-1].update
    report = []
    for prompt, outs in jobs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            video = pipe.generate(prompt, progress=progress, init_image=args.init_image, keyframes=args.keyframes,
                                  options=opts)
        if bars:
            bars.pop().close()
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        fps = args.fps or video.fps
        for out in outs:
            video.save(out, fps=fps)
            say(f"wrote {out}")
        t = video.result.timings
        say(f"{len(video.frames)} frames at {fps:g} fps in {sum(t.values()):.1f} s ("
            + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + ")")
        report.append({"prompt": video.prompt, "files": outs, "frames": len(video.frames), "fps": fps,
                       "height": int(video.frames.shape[1]), "width": int(video.frames.shape[2]),
                       "seed": opts.seed, "seconds": {k: round(v, 4) for k, v in t.items()}})
    if args.json:
        print(json.dumps(report[0] if len(report) == 1 and not args.prompts else report, indent=2))
    return 0


def cmd_generate(args) -> int:
    import logging
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")

    def load():
        from hiergen.runtime.pipeline import Pipeline
        return Pipeline.load(args.model, backend=args.backend, threads=args.threads)
    return _generate_and_save(args, load)


def cmd_reference(args) -> int:
    if (msg := _needs_torch()):
        return _fail(msg)

    def load():
        import torch
        from hiergen.training.generate import ReferencePipeline
        torch.set_num_threads(args.threads)
        return ReferencePipeline.load(args.checkpoints, args.vqvae)
    return _generate_and_save(args, load)


def cmd_bench(args) -> int:
    import importlib.util

    from hiergen.runtime.backend import BackendError, providers_for
    from hiergen.runtime.package import PackageError
    from hiergen.runtime.video import VideoError, check_writable
    from hiergen.tools import bench

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    check_threads(args.threads)
    if args.runs < 1:
        return _fail(f"--runs needs at least 1 timed video per backend, got {args.runs}")
    if args.rounds < 1:
        return _fail(f"--rounds needs at least 1 round, got {args.rounds}")
    try:
        for out in (args.json, args.markdown):
            if out:
                check_writable(out)
        for b in backends:
            if b == "torch":
                if importlib.util.find_spec("torch") is None:
                    raise BackendError("backend 'torch' (the PyTorch reference) needs pip install 'hiergen[train]'")
                missing = [p for p in (args.vqvae, *(f"{args.checkpoints}/{k}.safetensors"
                                                     for k in ("t2i", "keyframe", "interp"))) if not Path(p).is_file()]
                if missing:
                    raise BackendError(f"the PyTorch reference needs {', '.join(missing)}: pass --checkpoints/--vqvae "
                                       "or drop torch from --backends")
            else:
                providers_for(b)
        result = bench.bench(args.model, backends, args.checkpoints, args.vqvae, args.runs, args.frames,
                             " ".join(args.prompt), args.seed, args.threads, rss=not args.no_rss,
                             rounds=args.rounds)
    except (BackendError, PackageError, VideoError, RuntimeError) as e:
        return _fail(str(e))
    text = bench.markdown(result)
    print(text)
    from hiergen.fileio import write_json, write_text
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.markdown:
        write_text(args.markdown, text)
        print(f"wrote {args.markdown}")
    return 0


def cmd_export(args) -> int:
    if (msg := _needs_torch()):
        return _fail(msg)
    from hiergen.export.commands import cmd_export as run
    return run(args.checkpoints, args.vqvae, args.out, args.force, args.keyframe, args.keyframe_rate)


def cmd_check(args) -> int:
    import json

    from hiergen.runtime.check import check_package
    report = check_package(args.path, onnx_checker=False if args.no_onnx_checker else None)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "manifest"}, indent=2))
    else:
        skipped = "" if "onnx checker" in report["checks"] else " (ONNX checker skipped: pip install onnx to run it)"
        print(f"{args.path}: ok ({report['format']} v{report['format_version']}, {report['fragments']} fragments; "
              f"checked: {', '.join(report['checks'])}){skipped}")
    return 0


# ---------------------------------------------------------------- parser
def _add_checkpoint_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoints", default="checkpoints/transformer",
                   help="folder with t2i/keyframe/interp .safetensors (default checkpoints/transformer)")
    s.add_argument("--vqvae", default="checkpoints/vqvae/final.safetensors",
                   help="tokenizer checkpoint (default checkpoints/vqvae/final.safetensors)")


def _add_generation_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("prompt", nargs="*", help="the caption, e.g. a small red circle moves left slowly")
    s.add_argument("-o", "--output", default=None,
                   help="video file: .mp4 (H.264), .gif or .png (a contact sheet); default out.mp4. With "
                        "--prompts, only its extension counts")
    s.add_argument("--prompts", metavar="FILE",
                   help="generate one video per line of FILE (blank lines and # comments skipped) with one loaded "
                        "model, into --out DIR as 001-<prompt>.mp4, ...; every video with --seed")
    s.add_argument("--out", metavar="DIR", help="folder for the videos of --prompts (created if missing)")
    s.add_argument("--fps", type=float, default=None,
                   help="playback frame rate of the MP4/GIF (default: the rate the plan generated at, e.g. 32 "
                        "for a quick action's 33 frames)")
    s.add_argument("--json", action="store_true",
                   help="print what was written (files, frames, fps, seconds per stage) as JSON on stdout; the "
                        "human-readable lines go to stderr")
    s.add_argument("--gif", action="store_true", help="also write a GIF beside the output")
    s.add_argument("--sheet", action="store_true", help="also write a contact sheet PNG beside the output")
    s.add_argument("--frames", type=int, default=33, help="frames to make: 5, 9, 17 or 33 (default 33)")
    s.add_argument("--seed", type=int, default=0,
                   help="sampling seed, 0 to 2**64-1 (default 0): the same seed gives the same video")
    s.add_argument("--temperature", type=float, default=None, help="0 = greedy; default: the plan's (1.0)")
    s.add_argument("--top-k", type=int, default=None,
                   help="keep the k likeliest tokens: 0 = no cut, 1 = greedy; default: the plan's (12)")
    s.add_argument("--top-p", type=float, default=None, help="nucleus share in (0, 1]; default: the plan's (1.0 = off)")
    s.add_argument("--strict", action="store_true", help="refuse prompts with words the model never saw")
    user = s.add_mutually_exclusive_group()
    user.add_argument("--init-image", metavar="IMAGE",
                      help="your own first frame (image-to-video): it replaces the text-to-image stage; any size, "
                           "centre-cropped and resized to the model's")
    user.add_argument("--keyframes", nargs="+", metavar="IMAGE",
                      help="interpolate your own frames: 5, 9, 17 or 33 images, at most --frames, become evenly "
                           "spaced frames of the video (first and last included); put them after the prompt")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hiergen", formatter_class=_Formatter, epilog=EPILOG,
        description="Hierarchical text-to-video (CogVideo-style): synthetic data, training, "
                    "ONNX export and an edge runtime.")
    from hiergen import __version__
    p.add_argument("--version", action="version", version=f"hiergen {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    s = sub.add_parser("info", help="print versions, ONNX Runtime providers and whether CUDA/TensorRT are usable",
                       formatter_class=_Formatter,
                       description="What this machine can run: Python, hiergen, ONNX Runtime and its execution "
                                   "providers, PyTorch (if installed), GPUs, and whether CUDA and TensorRT load.",
                       epilog="examples:\n  hiergen info\n  hiergen info --json > machine.json")
    s.add_argument("--json", action="store_true", help="print the same facts as JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("synth", help="render captioned synthetic clips: one preview or a whole dataset",
                       formatter_class=_Formatter,
                       description="Render a caption to a clip (--caption, -o) or a dataset of clips (--n, --out).",
                       epilog="captions: 'a <small|large> <colour> <circle|square|triangle> <motion> [slowly|quickly]'\n"
                              "colours: red orange yellow green cyan blue purple white\n"
                              "motions: moves left|right|up|down, moves X then Y (perpendicular), bounces, stays still\n"
                              "examples:\n"
                              "  hiergen synth --caption \"a small red circle moves left quickly\" -o clip.mp4\n"
                              "  hiergen synth --caption \"a large cyan square bounces slowly\" -o sheet.png --seed 3\n"
                              "  hiergen synth --n 8000 --out data/synth8k")
    s.add_argument("--caption", help="render this caption")
    s.add_argument("-o", "--output", help="preview file for --caption: .mp4, .gif or .png (contact sheet)")
    s.add_argument("--n", type=int, help="number of clips for a dataset")
    s.add_argument("--out", help="dataset folder to create (clips + index.jsonl; see hiergen/data.py)")
    s.add_argument("--seed", type=int, default=0, help="seed of the preview clip, or first seed of the dataset (default 0)")
    s.add_argument("--size", type=int, default=64, help="frame side in pixels, 16..256 (default 64)")
    s.add_argument("--scale", type=int, default=4, help="enlarge the preview by this factor, nearest neighbour (default 4)")
    s.add_argument("--textured", action="store_true", help="textured dark background instead of a plain one")
    s.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("import-videos", help="turn your own captioned videos into a training dataset",
                       formatter_class=_Formatter,
                       description="Read videos listed in a JSONL of {\"path\", \"caption\"} lines (paths relative "
                                   "to FOLDER), centre-crop, resize and resample them to 16 fps. Unreadable files "
                                   "are skipped with a warning.",
                       epilog="examples:\n  hiergen import-videos ~/clips ~/clips/captions.jsonl --out data/mine\n"
                              "  hiergen import-videos ~/clips captions.jsonl --out data/mine --size 64 --strict --force")
    s.add_argument("folder", help="folder the JSONL's video paths are relative to")
    s.add_argument("captions", help="JSONL file, one {\"path\": ..., \"caption\": ...} per line")
    s.add_argument("--out", required=True, help="dataset folder to create")
    s.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    s.add_argument("--strict", action="store_true", help="skip videos whose caption is not in the caption grammar")
    s.add_argument("--force", action="store_true", help="replace an existing dataset folder at --out")
    s.set_defaults(func=cmd_import_videos)

    s = sub.add_parser("eval", help="score clips, or videos a model generates, against their captions",
                       formatter_class=_Formatter,
                       description="Run the OpenCV clip analyzer on clips and score colour, shape, size, motion "
                                   "and speed against the captions; the same clips with shuffled captions give "
                                   "the chance floor. With --prompts N, generate a 33-frame video for each of N "
                                   "held-out test prompts (and seeds) with the model package, and with the "
                                   "frame-by-frame baseline and ablation packages if given, then score them all "
                                   "(ground truth is the ceiling).",
                       epilog="examples:\n  hiergen eval --synth 500 --json docs/eval/ground_truth.json\n"
                              "  hiergen eval --prompts 200 --baseline out/baseline --json docs/eval/generated.json "
                              "--plot docs/eval/generated_by_frame.png --samples docs/eval/generated_samples.png")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--clips", help="a dataset folder (hiergen synth --out / import-videos)")
    src.add_argument("--synth", type=int, metavar="N", help="render N ground-truth clips of the test split")
    src.add_argument("--prompts", type=int, metavar="N", help="generate and score videos for N held-out prompts")
    s.add_argument("--model", default=None, help="--prompts: the model package (default: the shipped models/default)")
    s.add_argument("--baseline", help="--prompts: a package whose keyframe model was trained with --fixed-rate 16: "
                                      "adds frame-by-frame generation with overlap 1 and 2")
    s.add_argument("--ablation", action="append", metavar="NAME=PACKAGE",
                   help="--prompts: another package to score with the hierarchical loop (repeatable)")
    s.add_argument("--true-keyframes", action="store_true",
                   help="--prompts: also interpolate each prompt's rendered keyframes (5 frames spread over the "
                        "clip) with the package: scores the interpolation model alone")
    s.add_argument("--jobs", type=int, default=None, help="--prompts: worker processes (default: all cores)")
    s.add_argument("--samples", help="--prompts: write a contact sheet of the first 6 hierarchical videos here")
    s.add_argument("--split", choices=("train", "val", "test", "all"), default="all", help="split of --clips (default all)")
    s.add_argument("--mp4-roundtrip", action="store_true", help="encode and decode every clip as MP4 first")
    s.add_argument("--vqvae", help="pass every frame through this tokenizer checkpoint (encode, decode) first; "
                                   "needs PyTorch")
    s.add_argument("--size", type=int, default=64, help="frame side for --synth (default 64)")
    s.add_argument("--textured", action="store_true", help="textured backgrounds for --synth")
    s.add_argument("--json", help="write the report as JSON here")
    s.add_argument("--plot", help="write the accuracy-by-frame plot (PNG) here")
    s.add_argument("--markdown", help="write the table as markdown here")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("train", help="train the tokenizer (vqvae) or the transformers (t2i, keyframe, interp, all)",
                       formatter_class=_Formatter,
                       description="Train with checkpoints and resume: re-running the same command after a kill "
                                   "continues where it stopped. Order: vqvae, tokenize, then t2i (the frozen "
                                   "backbone), keyframe and interp; `all` runs the three transformers in order.",
                       epilog="examples: the default model, end to end:\n"
                              "  hiergen synth --n 4000 --out data/synth\n"
                              "  hiergen train vqvae --out checkpoints/vqvae\n"
                              "  hiergen tokenize --data data/synth --vqvae checkpoints/vqvae/final.safetensors "
                              "--out data/tokens\n"
                              "  hiergen train all --tokens data/tokens --out checkpoints/transformer\n"
                              "the video models' long run, continued in the next session by the same command:\n"
                              "  hiergen train keyframe --tokens data/tokens8k --out checkpoints/transformer "
                              "--threads 1 --ckpt-minutes 5\n"
                              "CogVideo's frozen-backbone recipe (the ablation row):\n"
                              "  hiergen train keyframe --frozen --tokens data/tokens8k --out checkpoints/frozen "
                              "--backbone checkpoints/transformer/t2i.safetensors\n"
                              "the frame-by-frame baseline (ablation, docs/eval):\n"
                              "  hiergen train keyframe --fixed-rate 16 --tokens data/tokens --out checkpoints/baseline "
                              "--backbone checkpoints/transformer/t2i.safetensors")
    s.add_argument("model", choices=("vqvae", "t2i", "keyframe", "interp", "all"), help="which model to train")
    s.add_argument("--tokens", help="token shards from `hiergen tokenize` (transformers)")
    s.add_argument("--out", required=True, help="checkpoint folder")
    s.add_argument("--data", help="vqvae: dataset folder (default: render training clips on the fly)")
    s.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the recipe's)")
    s.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    s.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    s.add_argument("--codebook", type=int, default=None, help="codebook entries (vqvae)")
    s.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    s.add_argument("--backbone", help="keyframe/interp: the t2i checkpoint to build on (default OUT/t2i.safetensors)")
    s.add_argument("--fixed-rate", type=int, default=None, metavar="FPS",
                   help="keyframe: windows at this one rate, anywhere in a clip, instead of the multi-rate "
                        "keyframe windows (16 = the frame-by-frame baseline of the ablation)")
    s.add_argument("--init", metavar="CKPT", help="warm start from this checkpoint of the same model (fresh optimiser "
                                                  "and schedule): train a shipped model further")
    s.add_argument("--random-backbone", action="store_true",
                   help="keyframe/interp: start from random weights and train the whole model instead of building "
                        "on the frozen t2i backbone (the ablation)")
    s.add_argument("--text-dropout", type=float, default=None,
                   help="share of text-free samples, for classifier-free guidance (default: the recipe's)")
    s.add_argument("--weights", choices=("video", "all"), default=None,
                   help="keyframe/interp: which weights train on top of the backbone: all (the default recipe: "
                        "every weight, starting from the backbone) or video (attention-plus, gates and the temporal "
                        "table only, the backbone frozen as in CogVideo)")
    s.add_argument("--frozen", action="store_true",
                   help="keyframe/interp: CogVideo's frozen-backbone recipe (--weights video, 2,000 steps of 16, "
                        "cosine): the ablation row")
    s.add_argument("--backbone-lr", type=float, default=None, metavar="SHARE",
                   help="with --weights all: the backbone weights' learning rate as a share of --lr (default 1)")
    s.add_argument("--schedule", choices=("cosine", "wsd"), default=None,
                   help="learning-rate schedule after warm-up: cosine to 10%%, or wsd (held, then a linear decay "
                        "over the last 20%% of the steps; --steps may be raised on resume before the decay starts)")
    s.add_argument("--probe-every", type=int, default=None, metavar="STEPS",
                   help="keyframe/interp: steps between motion probes (sampled videos of validation prompts judged "
                        "by the clip analyzer, logged in the history and plotted to OUT/KIND.motion.png); 0 = off "
                        "(default: the recipe's, 250)")
    s.add_argument("--probe-prompts", type=int, default=None, help="validation prompts the motion probe samples "
                                                                   "(default 32)")
    s.add_argument("--vqvae", default="checkpoints/vqvae/final.safetensors",
                   help="keyframe/interp: the tokenizer the motion probe decodes with (default %(default)s)")
    s.add_argument("--restart", action="store_true", help="ignore existing checkpoints and start afresh")
    s.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: all cores; use 1 when other work shares the machine, "
                        "small models lose far more to thread contention than they gain)")
    s.add_argument("--textured-share", type=float, default=None,
                   help="vqvae: share of on-the-fly clips with a textured background (default 0.3)")
    s.add_argument("--ckpt-every", type=int, default=None,
                   help="steps between resume points (default: vqvae 500, transformers 200)")
    s.add_argument("--ckpt-minutes", type=float, default=None,
                   help="transformers: also a resume point after this many minutes (default 5)")
    s.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="vqvae: training precision; auto uses bf16 where the hardware has it")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("tokenize", help="encode a dataset into token shards for transformer training",
                       formatter_class=_Formatter,
                       description="Encode every frame of a dataset with the VQ-VAE into per-split token shards. "
                                   "A re-run with the same tokenizer and dataset reuses intact shards.",
                       epilog="examples:\n  hiergen tokenize --data data/synth --out data/tokens\n"
                              "  hiergen tokenize --data data/synth8k --out data/tokens8k --jobs 2")
    s.add_argument("--data", required=True, help="dataset folder")
    s.add_argument("--vqvae", default="checkpoints/vqvae/final.safetensors",
                   help="tokenizer checkpoint (default checkpoints/vqvae/final.safetensors)")
    s.add_argument("--out", required=True, help="token shard folder")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for encoding; 1 is fastest on a shared machine")
    s.add_argument("--jobs", type=int, default=1,
                   help="worker processes of one thread each (default 1); on an idle machine one per core is "
                        "fastest: the small convolutions gain little from threads")
    s.set_defaults(func=cmd_tokenize)

    s = sub.add_parser("generate", help="generate a video from a prompt with a model package (ONNX Runtime, no torch)",
                       formatter_class=_Formatter,
                       description="Keyframes first, then recursive interpolation, driven by the package's "
                                   "generation plan over ONNX Runtime (TensorRT EP, CUDA EP or CPU).",
                       epilog="examples:\n  hiergen generate a small red circle moves left slowly -o red.mp4 --sheet\n"
                              "  hiergen generate a large cyan square bounces quickly --frames 9 --seed 3 --gif\n"
                              "  hiergen generate a small red circle moves left slowly --init-image first.png\n"
                              "  hiergen generate a small red circle moves left slowly --keyframes a.png b.png c.png "
                              "d.png e.png --frames 17\n"
                              "  hiergen generate --prompts prompts.txt --out videos/ --json\n"
                              "  hiergen generate a small green triangle moves up quickly --fps 16 -o slow-motion.mp4")
    _add_generation_options(s)
    s.add_argument("--model", default=None, help="model package folder (default: the shipped models/default)")
    s.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"),
                   help="ONNX Runtime execution provider (default auto: best available)")
    s.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads (default: all cores; on the CPU, decode steps of fewer than 8 "
                        "sequences run on one thread, which is faster for them)")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("bench", help="time every stage and backend in one run, against the PyTorch reference",
                       formatter_class=_Formatter,
                       description="Each backend runs in its own process: one warm-up video, then --runs timed "
                                   "videos of the same prompt and seed. Reports whole-video latency (median), the "
                                   "ratio to the PyTorch reference, per stage the decode step time against its "
                                   "memory-bandwidth bound (weights + KV arena read per step over the measured copy "
                                   "bandwidth), tokens/s, prefill time, and peak resident memory of each worker and "
                                   "of a plain `hiergen generate`.",
                       epilog="examples:\n  hiergen bench\n"
                              "  hiergen bench --runs 2 --rounds 3 --json docs/bench/cpu.json --markdown docs/bench/cpu.md\n"
                              "  hiergen bench --backends cpu --threads 1")
    s.add_argument("prompt", nargs="*", default="a large red circle moves right then up slowly".split(),
                   help="the caption to generate (default: a large red circle moves right then up slowly)")
    s.add_argument("--model", default=None, help="model package folder (default: the shipped models/default)")
    s.add_argument("--backends", default="cpu,torch",
                   help="comma-separated: cpu, cuda, tensorrt (ONNX Runtime providers) and torch (the PyTorch "
                        "reference, needs the checkpoints); default cpu,torch")
    _add_checkpoint_options(s)
    s.add_argument("--runs", type=int, default=3, help="timed videos per backend after one warm-up (default 3)")
    s.add_argument("--rounds", type=int, default=1,
                   help="run the backends in turn this many times, --runs videos each per round, and take "
                        "medians over all (default 1); on a machine whose speed drifts, 3 or more keeps a slow "
                        "spell from landing on one backend only")
    s.add_argument("--frames", type=int, default=33, choices=(5, 9, 17, 33), help="frames per video (default 33)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    s.add_argument("--threads", type=int, default=None,
                   help="CPU threads for every backend (default: all cores, each library's default; ONNX Runtime's "
                        "decode steps of fewer than 8 sequences run on one thread either way)")
    s.add_argument("--json", help="write the full result as JSON here")
    s.add_argument("--markdown", help="write the tables as markdown here")
    s.add_argument("--no-rss", action="store_true", help="skip the extra `hiergen generate` run for peak memory")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("reference", help="generate a video with the PyTorch reference generator (checkpoints)",
                       formatter_class=_Formatter,
                       description="The same loop as `generate`, in PyTorch from training checkpoints: the ground "
                                   "truth every exported runtime is checked against.",
                       epilog="examples:\n  hiergen reference a small red circle moves left slowly -o ref.mp4\n"
                              "  hiergen reference a small red circle moves left slowly --top-k 1 --json -o ref.png")
    _add_generation_options(s)
    _add_checkpoint_options(s)
    s.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (default 1: fastest for decode steps)")
    s.set_defaults(func=cmd_reference)

    s = sub.add_parser("export", help="export the trained models as an ONNX model package (manifest + fragments)",
                       formatter_class=_Formatter,
                       description="Write the model package: the VQ-VAE encoder and decoder, and for each of the "
                                   "three transformers (t2i, keyframe, interp) a step graph (new tokens through static "
                                   "KV caches), a prefill graph (a whole prefix, no cache) and a one-token decode "
                                   "graph: 11 ONNX fragments, with manifest.json naming every tensor, shape profile "
                                   "and hash and carrying the generation plan. Weights shared between graphs are "
                                   "stored once in weights.bin. Written to a temporary folder and renamed at the end.",
                       epilog="examples:\n  hiergen export --out models/default --force\n"
                              "  hiergen export --keyframe checkpoints/baseline/keyframe.safetensors --out out/baseline")
    _add_checkpoint_options(s)
    s.add_argument("--out", default="models/default", help="package folder (default models/default)")
    s.add_argument("--force", action="store_true", help="replace a different package at --out")
    s.add_argument("--keyframe", help="use this keyframe checkpoint instead of CHECKPOINTS/keyframe.safetensors "
                                      "(the frame-by-frame baseline: checkpoints/baseline/keyframe.safetensors)")
    s.add_argument("--keyframe-rate", type=int, choices=(1, 2, 4, 8, 16), metavar="FPS",
                   help="make every prompt's keyframes at this one rate (the plan's default picks it by the speed "
                        "word): for a keyframe model trained with --fixed-rate FPS, the one-rate ablation")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("check", help="validate a model package: manifest, hashes, ONNX Runtime load, ONNX checker",
                       formatter_class=_Formatter,
                       description="Check a model package before shipping or loading it: the manifest's format "
                                   "version, every file's SHA-256, every fragment loaded by ONNX Runtime with the "
                                   "inputs and outputs the manifest names, and, where the onnx package is "
                                   "installed, the ONNX checker and strict shape inference. Exit status 0 when "
                                   "the package is valid, 2 with the reason when it is not.",
                       epilog="examples:\n  hiergen check models/default\n  hiergen check out/int8 --json")
    s.add_argument("path", help="package folder, e.g. models/default")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--no-onnx-checker", action="store_true",
                   help="skip the ONNX checker even where onnx is installed (faster)")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("vqvae-quality", help="PSNR, codebook usage and perplexity of the tokenizer on held-out frames",
                       formatter_class=_Formatter,
                       epilog="examples:\n  hiergen vqvae-quality --json checkpoints/vqvae/quality.json\n"
                              "  hiergen vqvae-quality --textured --n-frames 500")
    s.add_argument("--vqvae", default="checkpoints/vqvae/final.safetensors",
                   help="tokenizer checkpoint (default checkpoints/vqvae/final.safetensors)")
    s.add_argument("--n-frames", type=int, default=1000, help="held-out frames from val/test clips (default 1000)")
    s.add_argument("--json", help="also write the result here")
    s.add_argument("--data", help="take held-out frames from this dataset instead of rendering them")
    s.add_argument("--textured", action="store_true", help="measure on textured backgrounds")
    s.set_defaults(func=cmd_vqvae_quality)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except HiergenError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
