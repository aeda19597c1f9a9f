"""The tools' commands: `hiergen eval` and `hiergen bench` (one function each over the parsed options; the
CLI only parses and dispatches). Errors are HiergenErrors the CLI prints (exit status 2)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from hiergen.errors import UsageError, as_user_error
from hiergen.runtime.options import check_threads
from hiergen.video import check_writable


def eval(args) -> int:          # noqa: A001  (the command's name)
    if args.prompts is not None:
        return _eval_generated(args)
    from hiergen.tools.evaluation import run_clip_eval
    return run_clip_eval(clips_dir=args.clips, n_synth=args.synth, split=args.split or "all",
                         mp4_roundtrip=args.mp4_roundtrip, vqvae=args.vqvae, size=args.size, textured=args.textured,
                         json_path=args.json, plot_path=args.plot, markdown_path=args.markdown)


def _eval_generated(args) -> int:
    from hiergen.tools.generated_eval import methods_for, run_generated_eval
    if args.prompts < 1:
        raise UsageError(f"--prompts needs a positive number of prompts, got {args.prompts}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs needs at least 1 worker process, got {args.jobs}")
    split = args.split or "test"
    if split not in ("val", "test"):
        raise UsageError(f"--prompts generates val or test prompts (training captions would score what the model "
                         f"was fitted to); got --split {split}")
    ablations = {}
    for a in args.ablation or []:
        name, sep, pkg = a.partition("=")
        if not sep or not name or not pkg:
            raise UsageError(f"--ablation takes NAME=PACKAGE, e.g. 'one fixed rate=out/fixed-rate'; got {a!r}")
        if name in ablations:
            raise UsageError(f"--ablation {name!r} is given twice ({ablations[name]}, {pkg}): give each its own name")
        ablations[name] = pkg
    try:
        methods_for(args.model, args.baseline, ablations, args.true_keyframes, args.keyframes_alone)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for out in (args.json, args.markdown, args.plot, args.samples):
        if out:
            check_writable(out)
    return run_generated_eval(args.model, args.prompts, args.baseline, ablations, args.jobs,
                              args.true_keyframes, args.json, args.markdown, args.plot, args.samples,
                              keyframes_alone=args.keyframes_alone, split=split)


def bench(args) -> int:
    from hiergen.fileio import write_json, write_text
    from hiergen.runtime.backend import providers_for
    from hiergen.tools import bench as bench_tool

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    check_threads(args.threads)
    if args.runs < 1:
        raise UsageError(f"--runs needs at least 1 timed video per backend, got {args.runs}")
    if args.rounds < 1:
        raise UsageError(f"--rounds needs at least 1 round, got {args.rounds}")
    for out in (args.json, args.markdown):
        if out:
            check_writable(out)
    for b in backends:
        if b == "clib":                     # the C library (libhiergen, make clib) on ONNX Runtime's CPU provider
            continue
        if b != "torch":
            providers_for(b)
            continue
        if importlib.util.find_spec("torch") is None:
            raise UsageError("backend 'torch' (the PyTorch reference) needs pip install 'hiergen[train]'")
        missing = [p for p in (args.vqvae, *(f"{args.checkpoints}/{k}.safetensors" for k in ("t2i", "keyframe", "interp")))
                   if not Path(p).is_file()]
        if missing:
            raise UsageError(f"the PyTorch reference needs {', '.join(missing)}: pass --checkpoints/--vqvae "
                             "or drop torch from --backends")
    packages = {}
    for c in getattr(args, "compare", None) or []:
        name, sep, pkg = c.partition("=")
        if not sep or not name or not pkg or name in packages:
            raise UsageError(f"--compare takes NAME=PACKAGE with a name of its own, e.g. int8-cpu=out/int8-cpu; "
                             f"got {c!r}")
        packages[name] = pkg
    try:
        result = bench_tool.bench(args.model, backends, args.checkpoints, args.vqvae, args.runs, args.frames,
                                  " ".join(args.prompt), args.seed, args.threads, rss=not args.no_rss,
                                  rounds=args.rounds, packages=packages)
    except RuntimeError as e:              # a worker failed or the backends disagreed on the tokens
        raise as_user_error(e) from None
    text = bench_tool.markdown(result)
    print(text)
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.markdown:
        write_text(args.markdown, text)
        print(f"wrote {args.markdown}")
    return 0
