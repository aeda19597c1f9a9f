"""The ground's commands: `hiergen info`, `synth` and `import-videos` (one function each, over the parsed
options; the CLI only parses and dispatches). Torch-free."""
from __future__ import annotations

import json

from hiergen.errors import UsageError


def info(args) -> int:
    from hiergen.sysinfo import collect, format_info
    facts = collect()
    print(json.dumps(facts, indent=2) if args.json else format_info(facts))
    return 0


def synth(args) -> int:
    from hiergen.captions import parse
    from hiergen.data import write_synth_dataset
    from hiergen.synth import render
    from hiergen.video import save_video

    if (args.caption is None) == (args.n is None):
        raise UsageError("give either --caption TEXT -o FILE (one preview clip) or --n N --out DIR (a dataset)")
    if args.caption is not None:
        if not args.output:
            raise UsageError("--caption needs -o FILE (.mp4, .gif or .png contact sheet)")
        clip = render(parse(args.caption), seed=args.seed, size=args.size, textured=args.textured)
        path = save_video(clip.frames, args.output, clip.fps, clip.caption, scale=args.scale)
        print(f"wrote {path}: {clip.n_frames} frames at {clip.fps:g} fps ({clip.duration_s:.2f} s), "
              f"{args.size}x{args.size}: {clip.caption}")
        return 0
    if not args.out:
        raise UsageError("--n needs --out DIR")
    ds = write_synth_dataset(args.out, args.n, size=args.size, textured=args.textured,
                             start_seed=args.seed, force=args.force)
    splits = {s: sum(r.split == s for r in ds.records) for s in ("train", "val", "test")}
    held = sum(r.held_out for r in ds.records)
    print(f"wrote {ds.root}: {len(ds)} clips ({splits['train']} train, {splits['val']} val, "
          f"{splits['test']} test; {held} with held-out colour/shape pairs)")
    return 0


def import_videos(args) -> int:
    from hiergen.data import write_video_dataset
    ds = write_video_dataset(args.folder, args.captions, args.out, size=args.size, force=args.force,
                             strict_captions=args.strict)
    print(f"wrote {ds.root}: {len(ds)} clips at 16 fps, {args.size}x{args.size}")
    return 0
