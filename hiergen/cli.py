"""`hiergen` command line: argument parsing and dispatch only.

Each command is one function in its wing (COMMANDS); it is imported when the
command runs, so the torch-free commands work on the base install. Every
error a user can fix is a HiergenError, printed as `hiergen: error: ...` with
exit status 2 (hiergen/errors.py).
"""
from __future__ import annotations

import argparse
import sys

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

errors: every command checks its input before long work and reports a problem as one line,
`hiergen: error: <what is wrong and how to fix it>`, with exit status 2; 0 is success and
130 an interrupt (a training run stopped so writes its resume point first).
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; defaults are written into the help texts that have one."""


def _fail(msg: str) -> int:
    """Every command's one error style (hiergen/errors.py): the message on stderr, exit status 2."""
    print(f"hiergen: error: {msg}", file=sys.stderr)
    return EXIT_ERROR


# ---------------------------------------------------------------- dispatch
# Each command is one function in its wing; the CLI imports it only when the command runs, so
# `hiergen --help`, `info`, `synth`, `generate` and `check` never import torch.
COMMANDS = {
    "info": "hiergen.commands:info",
    "synth": "hiergen.commands:synth",
    "import-videos": "hiergen.commands:import_videos",
    "eval": "hiergen.tools.commands:eval",
    "bench": "hiergen.tools.commands:bench",
    "generate": "hiergen.runtime.commands:generate",
    "check": "hiergen.runtime.commands:check",
    "train": "hiergen.training.commands:train",
    "tokenize": "hiergen.training.commands:tokenize",
    "vqvae-quality": "hiergen.training.commands:vqvae_quality",
    "reference": "hiergen.training.commands:reference",
    "export": "hiergen.export.commands:export",
    "quantize": "hiergen.calibration.commands:quantize",
    "build-engine": "hiergen.calibration.commands:build_engine",
    "agreement": "hiergen.calibration.commands:agreement",
}
NEEDS_TORCH = ("hiergen.training", "hiergen.export")


def run(command: str, args) -> int:
    import importlib
    import importlib.util

    module, _, function = COMMANDS[command].partition(":")
    if module.startswith(NEEDS_TORCH) and importlib.util.find_spec("torch") is None:
        return _fail(f"`hiergen {command}` needs PyTorch: install the training extra with "
                     "`pip install 'hiergen[train]'` (or `make setup`)")
    return getattr(importlib.import_module(module), function)(args)


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
    s.add_argument("--keyframes-alone", action="store_true",
                   help="--prompts: also give each prompt's rendered first frame and make the 5 keyframes only: "
                        "scores the keyframe model alone")
    s.add_argument("--jobs", type=int, default=None, help="--prompts: worker processes (default: all cores)")
    s.add_argument("--samples", help="--prompts: write a contact sheet of the first 6 hierarchical videos here")
    s.add_argument("--split", choices=("train", "val", "test", "all"), default=None,
                   help="split of --clips (default all); with --prompts, the split whose prompts and seeds are "
                        "generated (default test; val to choose between packages without looking at test)")
    s.add_argument("--mp4-roundtrip", action="store_true", help="encode and decode every clip as MP4 first")
    s.add_argument("--vqvae", help="pass every frame through this tokenizer checkpoint (encode, decode) first; "
                                   "needs PyTorch")
    s.add_argument("--size", type=int, default=64, help="frame side for --synth (default 64)")
    s.add_argument("--textured", action="store_true", help="textured backgrounds for --synth")
    s.add_argument("--json", help="write the report as JSON here")
    s.add_argument("--plot", help="write the accuracy-by-frame plot (PNG) here")
    s.add_argument("--markdown", help="write the table as markdown here")

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

    s = sub.add_parser("tokenize", help="encode a dataset into token shards for transformer training",
                       formatter_class=_Formatter,
                       description="Encode every frame of a dataset with the VQ-VAE into per-split token shards. "
                                   "A re-run with the same tokenizer and dataset reuses intact shards.",
                       epilog="examples:\n  hiergen tokenize --data data/synth --out data/tokens\n"
                              "  hiergen tokenize --data data/synth8k --out data/tokens8k --jobs 2\n"
                              "  hiergen tokenize --data data/synth20k --out data/keyframes20k --jobs 2 --keyframes-only")
    s.add_argument("--data", required=True, help="dataset folder")
    s.add_argument("--vqvae", default="checkpoints/vqvae/final.safetensors",
                   help="tokenizer checkpoint (default checkpoints/vqvae/final.safetensors)")
    s.add_argument("--out", required=True, help="token shard folder")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for encoding; 1 is fastest on a shared machine")
    s.add_argument("--jobs", type=int, default=1,
                   help="worker processes of one thread each (default 1); on an idle machine one per core is "
                        "fastest: the small convolutions gain little from threads")
    s.add_argument("--keyframes-only", action="store_true",
                   help="encode only each clip's five keyframes (what the keyframe model trains on: about 12x "
                        "fewer frames), for a keyframe model on many more clips; such shards train the keyframe "
                        "model and the backbone, not the interpolation model or a fixed-rate baseline")

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
                   help="comma-separated: cpu, cuda, tensorrt (ONNX Runtime providers), clib (libhiergen, the C "
                        "library: `make clib` builds it) and torch (the PyTorch reference, needs the checkpoints); "
                        "default cpu,torch")
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
    s.add_argument("--compare", action="append", metavar="NAME=PACKAGE",
                   help="also run this package (e.g. `hiergen quantize`'s int8-cpu) on each ONNX Runtime backend, "
                        "interleaved in the same rounds: speed-ups per stage and weight size against --model "
                        "(repeatable)")

    s = sub.add_parser("reference", help="generate a video with the PyTorch reference generator (checkpoints)",
                       formatter_class=_Formatter,
                       description="The same loop as `generate`, in PyTorch from training checkpoints: the ground "
                                   "truth every exported runtime is checked against.",
                       epilog="examples:\n  hiergen reference a small red circle moves left slowly -o ref.mp4\n"
                              "  hiergen reference a small red circle moves left slowly --top-k 1 --json -o ref.png")
    _add_generation_options(s)
    _add_checkpoint_options(s)
    s.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (default 1: fastest for decode steps)")

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
    s.add_argument("--interp", help="use this interpolation checkpoint instead of CHECKPOINTS/interp.safetensors "
                                    "(CogVideo's frozen-backbone recipe: checkpoints/frozen/interp.safetensors)")
    s.add_argument("--keyframe-rate", type=int, choices=(1, 2, 4, 8, 16), metavar="FPS",
                   help="make every prompt's keyframes at this one rate (the plan's default picks it by the speed "
                        "word): for a keyframe model trained with --fixed-rate FPS, the one-rate ablation")

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

    s = sub.add_parser("quantize", help="write an fp16, int8-cpu or int8-qdq copy of an fp32 model package",
                       formatter_class=_Formatter,
                       description="Turn an fp32 model package into a new package of the same format at another "
                                   "precision: fp16 (weights, activations and KV caches; LayerNorm, softmax and "
                                   "logits in fp32), int8-cpu (the fastest int8 on ONNX Runtime's CPU provider) or "
                                   "int8-qdq (symmetric int8 Q/DQ for TensorRT). The int8 flavours are calibrated "
                                   "on activations captured while the runtime generates training-split prompts. "
                                   "The manifest records each fragment's precision, the source package's SHA-256 "
                                   "and the calibration set. Needs onnx (pip install 'hiergen[train]'). Written to "
                                   "a temporary folder and renamed at the end.",
                       epilog="examples:\n  hiergen quantize models/default --precision int8-cpu --out out/int8-cpu\n"
                              "  hiergen quantize models/default --precision int8-qdq --out out/int8-qdq "
                              "--calibration 16 --seed 1\n"
                              "  hiergen quantize models/default --precision fp16 --out out/fp16")
    s.add_argument("package", help="the fp32 package, e.g. models/default")
    s.add_argument("--precision", required=True, metavar="PRECISION", help="fp16, int8-cpu or int8-qdq")
    s.add_argument("--out", required=True, help="folder of the new package")
    s.add_argument("--calibration", type=int, default=None, metavar="N",
                   help="int8: calibrate on N training-split prompts drawn with --seed, chosen to hold every "
                        "caption word first (default 16)")
    s.add_argument("--calibration-prompts", metavar="FILE",
                   help="int8: calibrate on these captions instead, one per line (no held-out colour/shape pair)")
    s.add_argument("--samples", type=int, default=24,
                   help="input sets kept per graph, sampled over all steps (default 24)")
    s.add_argument("--seed", type=int, default=0, help="calibration seed: prompts drawn and sampled (default 0)")
    s.add_argument("--smooth", type=float, default=None, metavar="ALPHA",
                   help="int8: even out the LayerNorm outputs' channels before quantising, folding the scales into "
                        "the MatMul weights (SmoothQuant's alpha, 0 = off; default 0.75 for int8-cpu, off for "
                        "int8-qdq, as measured best)")
    s.add_argument("--force", action="store_true", help="replace an existing folder at --out")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    s = sub.add_parser("build-engine", help="build TensorRT engines for a model package (cached by hash and GPU)",
                       formatter_class=_Formatter,
                       description="Build one TensorRT engine per fragment through the TensorRT Python API (10.x or "
                                   "11.x), strongly typed from the package's fp16 or Q/DQ graphs, with the "
                                   "manifest's min/opt/max shapes as the optimisation profile and a shared timing "
                                   "cache. Engines are cached under a key of fragment SHA-256, TensorRT version, "
                                   "GPU name and compute capability, precision and profiles; a stale engine is "
                                   "rebuilt, never loaded. Needs TensorRT and an NVIDIA GPU.",
                       epilog="examples:\n  hiergen quantize models/default --precision int8-qdq --out out/int8-qdq\n"
                              "  hiergen build-engine out/int8-qdq --precision int8-qdq\n"
                              "  hiergen build-engine out/fp16 --cache /data/engines")
    s.add_argument("package", help="package folder (its precision is in its manifest)")
    s.add_argument("--precision", default=None, metavar="PRECISION",
                   help="fp32, fp16 or int8-qdq: must be the package's (default: the package's)")
    s.add_argument("--cache", default=None, help="engine cache folder (default ~/.cache/hiergen/engines/<package>)")

    s = sub.add_parser("agreement", help="next-token agreement of reduced-precision packages with fp32 (teacher forcing)",
                       formatter_class=_Formatter,
                       description="Generate held-out prompts with the fp32 package, replay its exact inputs "
                                   "through each other package, and report per stage the share of positions whose "
                                   "top-1 token matches fp32's and the largest logit difference.",
                       epilog="examples:\n  hiergen agreement out/fp16 out/int8-cpu out/int8-qdq --prompts 8\n"
                              "  hiergen agreement out/int8-cpu --reference models/default --json out/agreement.json")
    s.add_argument("packages", nargs="+", help="packages to compare with the reference")
    s.add_argument("--reference", default=None, help="the fp32 package (default: the shipped models/default)")
    s.add_argument("--prompts", type=int, default=8, help="held-out test prompts (default 8)")
    s.add_argument("--split", choices=("val", "test"), default="test",
                   help="whose prompts and seeds: test (the reported figures) or val (to choose between packages)")
    s.add_argument("--json", help="write the result as JSON here")
    s.add_argument("--markdown", help="write the table as markdown here")

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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return run(args.command, args)
    except HiergenError as e:
        return _fail(str(e))
    except KeyboardInterrupt as e:          # Ctrl-C; a training run stopped by a signal says where it stopped
        print(str(e) or "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
