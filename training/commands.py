"""Entry functions behind `hiergen train vqvae`, `hiergen tokenize` and `hiergen vqvae-quality`.

The CLI parses arguments and calls these with plain values; each returns 0 or
raises a HiergenError whose message says what to do (the CLI prints it, exit 2).
"""
from __future__ import annotations

import json
import time

from hiergen.errors import HiergenError


def _user_error(e: ValueError) -> HiergenError:
    """A ValueError from deeper down (a config out of range) as the user-facing error it is."""
    return e if isinstance(e, HiergenError) else HiergenError(str(e))


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
        raise _user_error(e) from None
    ev = result["eval"]
    print(f"wrote {result['final']} after {result['step']} steps ({result['elapsed_s']:.0f} s of training, "
          f"{time.perf_counter() - t0:.0f} s this run): held-out PSNR {ev['psnr_db']:.2f} dB on "
          f"{ev['n_frames']} frames, perplexity {ev['perplexity']:.1f}, "
          f"{ev['codes_used']}/{ev['n_codes']} codes in use")
    return 0


def cmd_tokenize(data: str, vqvae: str, out: str, batch: int = 32, threads: int | None = None,
                 jobs: int = 1) -> int:
    from hiergen.training.tokenize import tokenize_dataset

    try:
        manifest = tokenize_dataset(data, vqvae, out, batch=batch, threads=threads, jobs=jobs)
    except ValueError as e:
        raise _user_error(e) from None
    parts = ", ".join(f"{s}: {e['n_clips']} clips / {e['n_frames']} frames" for s, e in manifest["splits"].items())
    print(f"tokens in {out} (key {manifest['key'][:12]}): {parts}")
    return 0


def cmd_vqvae_quality(vqvae: str, n_frames: int = 1000, json_path: str | None = None,
                      data: str | None = None, textured: bool = False) -> int:
    from hiergen.training.quality import measure_quality

    try:
        result = measure_quality(vqvae, n_frames=n_frames, data=data, json_path=json_path, textured=textured)
    except ValueError as e:
        raise _user_error(e) from None
    print(json.dumps(result, indent=2))
    return 0
