"""`hiergen generate` and `hiergen check`: each command one function over the parsed options.

The CLI (hiergen/cli.py) only parses and dispatches here; errors are HiergenErrors that it prints as
`hiergen: error: ...` with exit status 2. `hiergen reference` runs `generate` with the PyTorch reference
pipeline instead (training/commands.py).
"""
from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

from hiergen.runtime.options import GenerationOptions, OptionError, check_threads
from hiergen.runtime.pipeline import PromptError, check_prompt, read_user_images
from hiergen.tokenizer import TextTokenizer
from hiergen.video import check_output


def read_prompts(path: str) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"cannot read --prompts {path}: {getattr(e, 'strerror', None) or e}") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not prompts:
        raise PromptError(f"--prompts {path} holds no prompt: write one per line")
    return prompts


def _videos(args) -> list[tuple[str, list[str]]]:
    """(prompt, output files) per video: -o FILE for one prompt, or --prompts FILE into --out DIR."""
    if bool(args.prompt) == bool(args.prompts):
        raise OptionError("give one prompt (hiergen generate a small red circle moves left slowly -o out.mp4) "
                          "or --prompts FILE --out DIR, not both and not neither")
    if args.prompts:
        if not args.out:
            raise OptionError("--prompts FILE needs --out DIR for the videos")
        prompts = read_prompts(args.prompts)                 # an unreadable file leaves no folder behind
        Path(args.out).mkdir(parents=True, exist_ok=True)
        ext = Path(args.output).suffix if args.output else ".mp4"
        stems = [f"{i + 1:03d}-{re.sub(r'[^a-z0-9]+', '-', p.lower()).strip('-')[:60]}" for i, p in enumerate(prompts)]
        mains = [str(Path(args.out) / f"{stem}{ext}") for stem in stems]
    else:
        if args.out:
            raise OptionError("--out DIR goes with --prompts FILE; for one prompt use -o FILE")
        prompts, mains = [" ".join(args.prompt)], [args.output or "out.mp4"]
    videos = []
    for prompt, main in zip(prompts, mains):
        outs = [main] + [str(Path(main).with_suffix(e)) for e, on in ((".gif", args.gif), (".png", args.sheet)) if on]
        videos.append((prompt, list(dict.fromkeys(outs))))       # -o x.png --sheet: the sheet is written once
    return videos


def _load_onnx(args):
    import logging

    from hiergen.runtime.pipeline import Pipeline
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    return Pipeline.load(args.model, backend=args.backend, threads=args.threads)


def generate(args, load=_load_onnx) -> int:
    """Check everything, load the pipeline (`load(args)`), generate every video, write its files."""
    from hiergen.progress import Progress

    opts = GenerationOptions(frames=args.frames, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                             top_p=args.top_p, strict=args.strict)
    check_threads(args.threads)
    if args.fps is not None and not 0 < args.fps <= 240:
        raise OptionError(f"--fps must be above 0 and at most 240, got {args.fps}")
    videos = _videos(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # unknown words are reported once, by generate below
        for prompt, outs in videos:
            check_prompt(prompt, TextTokenizer.default(), args.strict)
            for out in outs:
                check_output(out)
    read_user_images(args.frames, args.init_image, args.keyframes)      # bad images fail before the load
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    pipe = load(args)
    bars: list[Progress] = []

    def progress(stage: str, n: int):
        if bars:
            bars[-1].close()
        bars.append(Progress(n, f"{stage:>9}", unit="tok", enabled=not args.quiet))
        return bars[-1].update
    report = []
    for prompt, outs in videos:
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


def check(args) -> int:
    from hiergen.runtime.check import check_package
    report = check_package(args.path, onnx_checker=False if args.no_onnx_checker else None)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "manifest"}, indent=2))
    else:
        skipped = "" if "onnx checker" in report["checks"] else " (ONNX checker skipped: pip install onnx to run it)"
        print(f"{args.path}: ok ({report['format']} v{report['format_version']}, {report['fragments']} fragments; "
              f"checked: {', '.join(report['checks'])}){skipped}")
    return 0
