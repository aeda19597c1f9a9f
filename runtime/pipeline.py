"""The Python API: load a model package, generate videos from prompts. Never imports torch.

    from hiergen import Pipeline
    pipe = Pipeline.load("models/default")                  # backend="auto": TensorRT EP, CUDA EP, CPU
    video = pipe.generate("a small red circle moves left slowly", frames=33, seed=0)
    video.frames            # (33, 64, 64, 3) uint8 RGB
    video.save("out.mp4")   # or .gif, or .png for a contact sheet

A Pipeline holds its sessions and no per-generation state (each generate call
allocates its own KV-cache arenas), so several threads may share one: ONNX
Runtime sessions are safe to run concurrently.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiergen.captions import CaptionError, parse, unknown_words
from hiergen.runtime.orchestrator import Request, Result, generate
from hiergen.runtime.plan import Plan, rounds_for
from hiergen.runtime.sampler import SamplerOptions
from hiergen.tokenizer import TextTokenizer

log = logging.getLogger("hiergen")
DEFAULT_PACKAGE = Path(__file__).resolve().parents[1] / "models" / "default"


class PromptError(ValueError):
    """A prompt the model cannot read; the message says how to fix it."""


@dataclass
class Video:
    frames: np.ndarray       # (F, H, W, 3) uint8 RGB
    tokens: np.ndarray       # (F, g, g) int64
    fps: float
    prompt: str
    result: Result

    def save(self, path: str | os.PathLike, scale: int = 4) -> Path:
        """Write by extension: .mp4, .gif (both enlarged `scale` times) or .png (contact sheet)."""
        from hiergen.runtime.video import save_video
        return save_video(self.frames, path, self.fps, self.prompt, scale=scale)


def check_prompt(prompt: str, tokenizer: TextTokenizer, strict: bool = False) -> str:
    """The cleaned prompt; raises PromptError for empty/over-long ones, warns (or raises if strict) on unknown words."""
    prompt = " ".join(prompt.split())
    if not prompt:
        raise PromptError("empty prompt: describe the video, e.g. 'a small red circle moves left slowly'")
    n = len(prompt.split())
    if n > tokenizer.max_words:
        raise PromptError(f"prompt has {n} words; the model reads at most {tokenizer.max_words}: shorten it to "
                          "'a <size> <colour> <shape> <motion> [<speed>]'")
    unknown = unknown_words(prompt)
    if unknown:
        msg = f"the model never saw {', '.join(map(repr, unknown))}; they are read as <unk>"
        if strict:
            raise PromptError(msg + " (drop --strict to generate anyway)")
        warnings.warn(msg, stacklevel=3)
    return prompt


def keyframe_rate(prompt: str, plan: Plan) -> int:
    """The plan's keyframe rate for the prompt's speed word (its default when the prompt is no caption)."""
    try:
        return plan.rate_for(parse(prompt).speed)
    except CaptionError:
        return plan.rate_for(None)


def run_generation(prompt: str, models: dict, codec, plan: Plan, tokenizer: TextTokenizer, frames: int, seed: int,
                   temperature: float | None, top_k: int | None, top_p: float | None, strict: bool = False,
                   progress=None) -> Video:
    """Validate everything, then generate: shared by every backend's pipeline."""
    prompt = check_prompt(prompt, tokenizer, strict)
    rounds_for(frames)
    opts = SamplerOptions(temperature=plan.temperature if temperature is None else temperature,
                          top_k=plan.top_k if top_k is None else top_k,
                          top_p=plan.top_p if top_p is None else top_p, seed=seed)
    res = generate(Request(prompt, tokenizer, keyframe_rate(prompt, plan), frames, opts), models, plan, progress)
    return Video(frames=codec.decode(res.tokens), tokens=res.tokens, fps=res.fps, prompt=prompt, result=res)


class Pipeline:
    def __init__(self, path: Path, manifest: dict, models: dict, codec, providers: list[str]):
        self.path, self.manifest, self.models, self.codec, self.providers = path, manifest, models, codec, providers
        self.plan = Plan.from_dict(manifest["plan"])
        self.tokenizer = TextTokenizer(tuple(manifest["vocab"]))

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, backend: str = "auto", threads: int | None = None) -> "Pipeline":
        """Open a package (default: the shipped models/default), verifying its format and hashes."""
        from hiergen.runtime.backend import OrtCodec, OrtStepModel, providers_for
        from hiergen.runtime.package import open_package

        root = Path(path) if path is not None else DEFAULT_PACKAGE
        manifest = open_package(root)
        providers = providers_for(backend)
        models = {k: OrtStepModel(root, manifest, f"{k}_step", providers, threads) for k in ("t2i", "keyframe", "interp")}
        codec = OrtCodec(root, manifest, providers, threads)
        used = models["t2i"].sess.get_providers()[0]
        log.info("hiergen: %s on %s (asked for %s)", root, used, backend)
        return cls(root, manifest, models, codec, providers)

    @property
    def device(self) -> str:
        return self.models["t2i"].sess.get_providers()[0]

    def generate(self, prompt: str, frames: int = 33, seed: int = 0, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, strict: bool = False,
                 progress=None) -> Video:
        return run_generation(prompt, self.models, self.codec, self.plan, self.tokenizer, frames, seed,
                              temperature, top_k, top_p, strict, progress)
