"""Tokenizer quality on held-out frames: PSNR, codebook perplexity and share of codes in use.

    from hiergen.training.quality import measure_quality
    measure_quality("checkpoints/vqvae/final.safetensors", n_frames=1000, json_path="vqvae_quality.json")

Held-out frames come from val- and test-split seeds only (never a training
clip), evenly spaced inside each clip, the same frames on every call. PSNR is
measured on what a runtime shows: frames decoded and rounded to uint8.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from hiergen.synth import caption_for, render, seeds_for_split
from hiergen.training.vqvae import VQVAE, load_vqvae

FRAMES_PER_CLIP = 10


def heldout_frames(n: int = 1000, size: int = 64, data: str | os.PathLike | None = None,
                   textured: bool = False, per_clip: int = FRAMES_PER_CLIP) -> np.ndarray:
    """n uint8 frames (n, H, W, 3) from val/test clips: rendered on the fly, or read from `data`."""
    if n < 1:
        raise ValueError(f"n_frames must be >= 1, got {n}")
    n_clips = -(-n // per_clip)
    if data is None:
        val, test = seeds_for_split("val", n_clips), seeds_for_split("test", n_clips)
        seeds = [s for pair in zip(val, test) for s in pair][:n_clips]      # alternate the two splits
        clips = (render(caption_for(s), seed=s, size=size, textured=textured).frames for s in seeds)
    else:
        from hiergen.data import open_dataset
        ds = open_dataset(data)
        recs = [r for r in ds.records if r.split in ("val", "test")]
        if not recs:
            raise ValueError(f"dataset {data} has no val/test clips to measure on; create a larger one")
        clips = (ds.load(recs[i % len(recs)]).frames for i in range(n_clips))
    out = []
    for frames in clips:
        idx = np.unique(np.linspace(0, len(frames) - 1, per_clip).round().astype(int))
        out.append(frames[idx])
    frames = np.concatenate(out)
    while len(frames) < n:        # very short clips: top up by cycling (only in tiny datasets)
        frames = np.concatenate([frames, frames[: n - len(frames)]])
    return frames[:n]


@torch.no_grad()
def evaluate(model: VQVAE, frames: np.ndarray, batch: int = 250) -> dict:
    """Round-trip uint8 frames (N, H, W, 3) through the tokenizer and score them."""
    model.eval()
    device = next(model.parameters()).device
    n_codes = model.cfg.n_codes
    counts = torch.zeros(n_codes, dtype=torch.float64)
    sq_err = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i:i + batch]).to(device)                # (b, H, W, 3) uint8
        tokens = model.encode(x)                                            # (b, h, w)
        y = model.decode_uint8(tokens)                                      # (b, H, W, 3) uint8
        sq_err.append(((y.float() - x.float()) ** 2).flatten(1).mean(1).double().cpu())  # (b,)
        counts += torch.bincount(tokens.flatten().cpu(), minlength=n_codes).double()
    mse = torch.cat(sq_err)                                                 # (N,) per-frame MSE
    psnr = 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))
    p = counts / counts.sum()
    used = int((counts > 0).sum())
    return {
        "n_frames": len(frames),
        "psnr_db": float(psnr.mean()),                                      # mean of per-frame PSNR
        "psnr_pooled_db": 10 * math.log10(255.0 ** 2 / max(float(mse.mean()), 1e-10)),  # PSNR of mean MSE
        "psnr_min_db": float(psnr.min()),
        "perplexity": float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())),
        "codes_used": used,
        "n_codes": n_codes,
        "usage": used / n_codes,
    }


def measure_quality(vqvae_checkpoint: str | os.PathLike, n_frames: int = 1000,
                    data: str | os.PathLike | None = None, json_path: str | os.PathLike | None = None,
                    textured: bool = False) -> dict:
    """Score a tokenizer checkpoint on n held-out frames; optionally write the result as JSON."""
    model = load_vqvae(vqvae_checkpoint)
    frames = heldout_frames(n_frames, size=model.cfg.image_size, data=data, textured=textured)
    result = {"checkpoint": str(vqvae_checkpoint), "data": str(data) if data else "synth (on the fly)",
              "textured": textured, **evaluate(model, frames)}
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result
