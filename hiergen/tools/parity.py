"""Parity of an exported package with the PyTorch checkpoints it came from.

    python -m hiergen.tools.parity --package models/default --checkpoints checkpoints/transformer \\
        --vqvae checkpoints/vqvae/final.safetensors --frames 33

Generates one greedy video through the shared orchestrator twice, with the
ONNX Runtime step graphs and with the PyTorch models, and prints the largest
logit difference per step graph, the number of differing tokens, and the
largest pixel difference of the VQ-VAE decoder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def OrtStep(pkg: str | Path, model: str, threads: int = 1):
    """The runtime's step model for one transformer ("t2i", "keyframe", "interp") of a package, on the CPU."""
    from hiergen.runtime.backend import OrtStepModel
    from hiergen.runtime.package import load_manifest
    return OrtStepModel(Path(pkg), load_manifest(pkg), model, ["CPUExecutionProvider"], threads)


class _Recording:
    """Wrap a StepModel and keep every logits array it returns."""

    def __init__(self, inner, record):
        self.inner, self.record = inner, record
        self.text_len, self.grid, self.image_vocab = inner.text_len, inner.grid, inner.image_vocab

    def new_cache(self, batch):
        return self.inner.new_cache(batch)

    def prefill(self, tokens, codes, cache):
        return self._kept(self.inner.prefill(tokens, codes, cache))

    def decode(self, tokens, codes, cache):
        return self._kept(self.inner.decode(tokens, codes, cache))

    def _kept(self, out):
        self.record.append(np.array(out))       # a decode step's logits live in the arena
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hiergen.tools.parity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default="models/default")
    p.add_argument("--checkpoints", default="checkpoints/transformer")
    p.add_argument("--vqvae", default="checkpoints/vqvae/final.safetensors")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--prompt", default="a large red circle moves right then up slowly")
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    from hiergen.runtime.orchestrator import Request, generate
    from hiergen.runtime.package import load_manifest
    from hiergen.runtime.sampler import SamplerOptions
    from hiergen.runtime.pipeline import keyframe_rate
    from hiergen.training.generate import ReferencePipeline

    ref = ReferencePipeline.load(args.checkpoints, args.vqvae)
    plan = load_manifest(args.package).plan
    req = Request(args.prompt, ref.tokenizer, keyframe_rate(args.prompt, plan), args.frames, SamplerOptions(top_k=1))
    worst = {}
    rec_o: dict[str, list] = {}
    rec_t: dict[str, list] = {}
    onnx_models = {k: _Recording(OrtStep(Path(args.package), k), rec_o.setdefault(k, [])) for k in ref.models}
    torch_models = {k: _Recording(m, rec_t.setdefault(k, [])) for k, m in ref.models.items()}
    a = generate(req, onnx_models, plan).tokens
    b = generate(req, torch_models, plan).tokens
    for k in ref.models:
        n = min(len(rec_o[k]), len(rec_t[k]))
        worst[k] = max(float(np.abs(x - y).max()) for x, y in zip(rec_o[k][:n], rec_t[k][:n]))
        print(f"{k}_step: max |logit diff| ORT vs torch over {n} steps = {worst[k]:.2e}")
    print(f"{args.frames}-frame greedy video: {int((a != b).sum())} of {a.size} tokens differ")

    from hiergen.runtime.backend import OrtCodec
    dec = OrtCodec(Path(args.package), load_manifest(args.package), ["CPUExecutionProvider"], threads=1)
    pix = np.abs(dec.decode(b).astype(int) - ref.codec.decode(b).astype(int)).max()
    print(f"vqvae_decoder: max |pixel diff| over {len(b)} frames = {pix} / 255")
    return 0 if np.array_equal(a, b) and max(worst.values()) <= 1e-4 and pix <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
