"""The training wing's commands: `hiergen train`, `tokenize`, `vqvae-quality` and `reference`.

One function per command over the parsed options (the CLI only parses and
dispatches), plus typed calls for Python; each returns 0 or raises a
HiergenError whose message says what to do (the CLI prints it, exit 2).
"""
from __future__ import annotations

import json
import time

from hiergen.errors import UsageError, as_user_error
from hiergen.runtime.options import check_threads


def cmd_train_vqvae(out: str, steps: int | None = None, batch: int | None = None, lr: float | None = None,
                    seed: int = 0, data: str | None = None, codebook: int | None = None, resume: bool = True,
                    textured_share: float | None = None, ckpt_every: int | None = None,
                    precision: str = "auto", threads: int | None = None) -> int:
    """None means the TrainOptions default (the recipe of the shipped tokenizer)."""
    from hiergen.training.train_vqvae import TrainOptions, train_vqvae
    from hiergen.training.vqvae import VQVAEConfig

    given = {"steps": steps, "batch": batch, "lr": lr, "textured_share": textured_share, "ckpt_every": ckpt_every}
    try:
        config = VQVAEConfig() if codebook is None else VQVAEConfig(n_codes=codebook)
        opts = TrainOptions(seed=seed, precision=precision, **{k: v for k, v in given.items() if v is not None})
        t0 = time.perf_counter()
        result = train_vqvae(out, config, opts, data=data, resume=resume, threads=threads)
    except ValueError as e:
        raise as_user_error(e) from None
    ev = result["eval"]
    print(f"wrote {result['final']} after {result['step']} steps ({result['elapsed_s']:.0f} s of training, "
          f"{time.perf_counter() - t0:.0f} s this run): held-out PSNR {ev['psnr_db']:.2f} dB on "
          f"{ev['n_frames']} frames, perplexity {ev['perplexity']:.1f}, "
          f"{ev['codes_used']}/{ev['n_codes']} codes in use")
    return 0


def cmd_tokenize(data: str, vqvae: str, out: str, batch: int = 32, threads: int | None = None,
                 jobs: int = 1, keyframes_only: bool = False) -> int:
    from hiergen.training.tokenize import tokenize_dataset

    try:
        manifest = tokenize_dataset(data, vqvae, out, batch=batch, threads=threads, jobs=jobs,
                                    keyframes_only=keyframes_only)
    except ValueError as e:
        raise as_user_error(e) from None
    parts = ", ".join(f"{s}: {e['n_clips']} clips / {e['n_frames']} frames" for s, e in manifest["splits"].items())
    print(f"tokens in {out} (key {manifest['key'][:12]}): {parts}")
    return 0


def cmd_vqvae_quality(vqvae: str, n_frames: int = 1000, json_path: str | None = None,
                      data: str | None = None, textured: bool = False) -> int:
    from hiergen.training.quality import measure_quality

    try:
        result = measure_quality(vqvae, n_frames=n_frames, data=data, json_path=json_path, textured=textured)
    except ValueError as e:
        raise as_user_error(e) from None
    print(json.dumps(result, indent=2))
    return 0


# ------------------------------------------------------------ the CLI's commands
def train(args) -> int:
    """`hiergen train vqvae|t2i|keyframe|interp|all`."""
    import torch

    from hiergen.config import Kind
    from hiergen.training.recipes import train_models

    check_threads(args.threads)
    if args.model == "vqvae":
        return cmd_train_vqvae(out=args.out, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                               data=args.data, codebook=args.codebook, resume=not args.restart,
                               textured_share=args.textured_share, ckpt_every=args.ckpt_every,
                               precision=args.precision, threads=args.threads)
    if not args.tokens:
        raise UsageError(f"`hiergen train {args.model}` needs --tokens DIR (made by `hiergen tokenize`)")
    kinds = list(Kind) if args.model == "all" else [Kind(args.model)]
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "fixed_rate": args.fixed_rate,
                 "text_dropout": args.text_dropout, "init_from": args.init, "weights": args.weights,
                 "backbone_lr": args.backbone_lr, "schedule": args.schedule, "ckpt_every": args.ckpt_every,
                 "ckpt_minutes": args.ckpt_minutes, "probe_every": args.probe_every,
                 "probe_prompts": args.probe_prompts, "pretrained_backbone": False if args.random_backbone else None}
    try:
        train_models(args.tokens, args.out, kinds, overrides, seed=args.seed, restart=args.restart,
                     backbone=args.backbone, frozen=args.frozen, vqvae=args.vqvae)
    except (ValueError, OSError) as e:
        raise as_user_error(e) from None
    return 0


def tokenize(args) -> int:
    import os
    check_threads(args.threads)
    if not 1 <= args.jobs <= 4 * (os.cpu_count() or 1):
        raise UsageError(f"--jobs must be 1 to 4 x the cores, got {args.jobs}")
    return cmd_tokenize(data=args.data, vqvae=args.vqvae, out=args.out, threads=args.threads, jobs=args.jobs,
                        keyframes_only=args.keyframes_only)


def vqvae_quality(args) -> int:
    return cmd_vqvae_quality(vqvae=args.vqvae, n_frames=args.n_frames, json_path=args.json, data=args.data,
                             textured=args.textured)


def reference(args) -> int:
    """`hiergen reference`: `hiergen generate`'s flow over the PyTorch reference pipeline."""
    from hiergen.runtime.commands import generate

    def load(args):
        import torch

        from hiergen.training.generate import ReferencePipeline
        torch.set_num_threads(args.threads)
        return ReferencePipeline.load(args.checkpoints, args.vqvae)
    return generate(args, load=load)
