"""The motion probe: does the model being trained move the object as its caption says?

Validation loss does not measure motion (a keyframe model can reach the same
loss with or without following the verb), so the trainers run this probe
every few minutes and log it beside the losses:
- keyframe model: the TRUE first frame of each validation clip is given and
  frames 2-5 are sampled, at the keyframe rate the generation plan gives the
  caption's speed word;
- interpolation model: the TRUE five keyframes (spread over the whole clip,
  as keyframe training spreads them) are given and two interpolation rounds
  make 17 frames.
Both run the runtime's own loop (hiergen.runtime.orchestrator.generate) over
the PyTorch model with the plan's sampler settings and a fixed seed per
prompt, decode with the VQ-VAE and score with the clip analyzer, so the probe
measures what `hiergen generate` would do with these weights.

    probe = MotionProbe.build(val_clips, Kind.KEYFRAME, "checkpoints/vqvae/final.safetensors", n=32)
    probe.run(model)      # {"motion": 0.41, "colour": 0.97, ...}
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass

import numpy as np
import torch

from hiergen.analyze import analyze_clip, score_reports
from hiergen.captions import parse
from hiergen.clip import Clip
from hiergen.config import Kind
from hiergen.runtime.orchestrator import STAGES, Codec, Request, generate
from hiergen.runtime.plan import Plan
from hiergen.runtime.sampler import SamplerOptions
from hiergen.tokenizer import TextTokenizer
from hiergen.training.generate import TorchCodec, TorchStepModel
from hiergen.training.model import load_model
from hiergen.training.sequences import TokenClip, token_clips
from hiergen.training.vqvae import load_vqvae

PROBE_FRAMES = {Kind.KEYFRAME: 5, Kind.INTERP: 17}


@dataclass(frozen=True)
class MotionProbe:
    kind: Kind
    captions: tuple[str, ...]
    given: tuple[np.ndarray, ...]   # per prompt: (1, g, g) true first frame, or (5, g, g) true keyframes
    codec: "Codec"
    tokenizer: TextTokenizer
    plan: Plan = Plan()

    @classmethod
    def build(cls, clips: list[TokenClip], kind: Kind | str, vqvae: "str | os.PathLike | Codec", n: int = 32,
              tokenizer: TextTokenizer | None = None, plan: Plan | None = None) -> "MotionProbe":
        """A probe over the first `n` clips (the validation split: fixed prompts, never trained on).
        vqvae: the tokenizer's checkpoint, or a Codec that decodes the tokens."""
        kind = Kind(kind)
        if kind not in PROBE_FRAMES:
            raise ValueError(f"the motion probe covers the video models (keyframe, interp), not {kind.value}")
        if not clips:
            raise ValueError("the motion probe needs validation clips; tokenize a dataset with a val split")
        chosen = clips[:n]
        given = []
        for c in chosen:
            keys = c.keyframes().astype(np.int64)
            given.append(keys[:1] if kind == Kind.KEYFRAME else keys)
        codec = TorchCodec(load_vqvae(vqvae)) if isinstance(vqvae, (str, os.PathLike)) else vqvae
        return cls(kind, tuple(c.caption for c in chosen), tuple(given), codec,
                   tokenizer or TextTokenizer.default(), plan or Plan())

    def videos(self, model) -> list[tuple[np.ndarray, float]]:
        """Per prompt the sampled video's tokens (F, g, g) and its frame rate; the model's mode is kept."""
        was_training = model.training
        try:
            with torch.no_grad():
                return self._sample(TorchStepModel(model))
        finally:
            model.train(was_training)

    def _sample(self, step_model: TorchStepModel) -> list[tuple[np.ndarray, float]]:
        # The given frames skip every stage but this model's, so it may stand in for all three.
        models = {stage: step_model for stage in STAGES}
        out = []
        for i, (caption, given) in enumerate(zip(self.captions, self.given)):
            rate = self.plan.rate_for(parse(caption).speed)
            opts = SamplerOptions(temperature=self.plan.temperature, top_k=self.plan.top_k, top_p=self.plan.top_p,
                                  seed=i)
            req = Request(caption, self.tokenizer, rate, PROBE_FRAMES[self.kind], opts,
                          first_frame=given[0] if self.kind == Kind.KEYFRAME else None,
                          keyframes=given if self.kind == Kind.INTERP else None)
            res = generate(req, models, self.plan)
            out.append((res.tokens, res.fps))
        return out

    def run(self, model) -> dict[str, float]:
        """Accuracy of the sampled videos (motion, colour, shape, size, two-phase motion) in 0..1."""
        videos = self.videos(model)
        reports = [analyze_clip(Clip(frames=self.codec.decode(t), fps=fps, caption=c))
                   for (t, fps), c in zip(videos, self.captions)]
        ev = score_reports(reports, self.captions)
        out = {k: float(ev.accuracy[k]) for k in ("motion", "colour", "shape", "size")}
        out["two_phase_motion"] = float(ev.two_phase_motion) if ev.two_phase_motion is not None else float("nan")
        out["one_object"] = float(ev.one_object_rate)
        return out


def main(argv: list[str] | None = None) -> int:
    """python -m hiergen.training.motion_probe CKPT [CKPT ...]: probe checkpoints (resume points too)."""
    import argparse
    import json

    from hiergen.training.tokenize import open_tokens

    p = argparse.ArgumentParser(prog="python -m hiergen.training.motion_probe", description=main.__doc__)
    p.add_argument("checkpoints", nargs="+", help="keyframe or interp checkpoints")
    p.add_argument("--tokens", required=True, help="token shards whose clips give the prompts and true frames")
    p.add_argument("--split", default="val", help="split of --tokens (default val)")
    p.add_argument("--prompts", type=int, default=64, help="prompts, the split's first (default 64)")
    p.add_argument("--backbone", default=None, help="the t2i checkpoint of frozen-backbone video models")
    p.add_argument("--vqvae", default="checkpoints/vqvae/final.safetensors")
    p.add_argument("--top-k", type=int, nargs="+", default=[Plan().top_k],
                   help=f"sampler top-k values to try (default the plan's, {Plan().top_k})")
    p.add_argument("--temperature", type=float, nargs="+", default=[Plan().temperature],
                   help=f"temperatures to try (default the plan's, {Plan().temperature})")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0],
                   help="guidance scales of the checkpoint's stage to try (default 1.0: none)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    clips = token_clips(open_tokens(args.tokens)[args.split])
    codec = TorchCodec(load_vqvae(args.vqvae))
    for path in args.checkpoints:
        model = load_model(path, args.backbone)
        for top_k, temperature, guidance in itertools.product(args.top_k, args.temperature, args.guidance):
            plan = dataclasses.replace(Plan(), top_k=top_k, temperature=temperature,
                                       guidance={**Plan().guidance, model.kind.value: guidance})
            probe = MotionProbe.build(clips, model.kind, codec, n=args.prompts, plan=plan)
            print(json.dumps({"checkpoint": path, "kind": model.kind.value, "prompts": args.prompts,
                              "split": args.split, "top_k": top_k, "temperature": temperature,
                              "guidance": guidance, **probe.run(model)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
