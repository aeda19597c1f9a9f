"""The Python API: load a model package, generate videos from prompts. Never imports torch.

    from hiergen import Pipeline
    pipe = Pipeline.load("models/default")                  # backend="auto": TensorRT EP, CUDA EP, CPU
    video = pipe.generate("a small red circle moves left slowly", frames=33, seed=0)
    video.frames            # (33, 64, 64, 3) uint8 RGB
    video.save("out.mp4")   # or .gif, or .png for a contact sheet

    # Your own frames (file paths or uint8 RGB arrays (H, W, 3) of any size):
    pipe.generate("a small red circle moves left slowly", frames=33, init_image="first.png")
    pipe.generate("a small red circle moves left slowly", frames=33, keyframes=["a.png", ..., "e.png"])

A Pipeline holds its sessions and no per-generation state (each generate call
allocates its own KV-cache arenas), so several threads may share one: ONNX
Runtime sessions are safe to run concurrently.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiergen.captions import CaptionError, parse, unknown_words
from hiergen.errors import HiergenError
from hiergen.runtime.manifest import MODELS, Manifest
from hiergen.runtime.options import GenerationOptions
from hiergen.runtime.orchestrator import Request, Result, generate, keyframe_rounds
from hiergen.runtime.plan import Plan
from hiergen.tokenizer import TextTokenizer

log = logging.getLogger("hiergen")
DEFAULT_PACKAGE = Path(__file__).resolve().parents[1] / "models" / "default"


class PromptError(HiergenError, ValueError):
    """A prompt the model cannot read; the message says how to fix it."""


class ImageError(HiergenError, ValueError):
    """A user frame (init_image, keyframes) the pipeline cannot use; the message says how to fix it."""


@dataclass
class Video:
    frames: np.ndarray       # (F, H, W, 3) uint8 RGB
    tokens: np.ndarray       # (F, g, g) int64
    fps: float
    prompt: str
    result: Result

    def save(self, path: str | os.PathLike, scale: int = 4, fps: float | None = None) -> Path:
        """Write by extension: .mp4, .gif (both enlarged `scale` times, played at `fps`, default the
        video's own rate) or .png (contact sheet). Raises VideoError, never a bare OSError."""
        from hiergen.video import save_video
        return save_video(self.frames, path, self.fps if fps is None else fps, self.prompt, scale=scale)


def check_prompt(prompt: str, tokenizer: TextTokenizer, strict: bool = False) -> str:
    """The cleaned prompt; raises PromptError for empty/over-long ones, warns (or raises if strict) on unknown words."""
    if not isinstance(prompt, str):
        raise PromptError(f"the prompt must be text, got {type(prompt).__name__}: "
                          "e.g. 'a small red circle moves left slowly'")
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


def read_user_images(frames: int, init_image=None, keyframes=None) -> list[np.ndarray]:
    """The user's frames as given, uint8 RGB (H, W, 3) each: [init_image], the keyframes, or [] for neither.

    Images are file paths or uint8 RGB arrays. The combination and the keyframe count
    are checked before any file is read; raises ImageError.
    """
    if init_image is not None and keyframes is not None:
        raise ImageError("give init_image (--init-image) or keyframes (--keyframes), not both: "
                         "the first keyframe is frame 1")
    if init_image is not None:
        return [_read_image(init_image, "init image")]
    if keyframes is None:
        return []
    if isinstance(keyframes, (str, os.PathLike)):
        raise ImageError(f"keyframes takes a list of images, got the single path {keyframes!r}; "
                         "for one first frame use init_image (--init-image)")
    keyframes = list(keyframes)                      # a list of images, or an array (N, H, W, 3)
    try:
        keyframe_rounds(len(keyframes), frames)
    except ValueError as e:
        raise ImageError(str(e)) from None
    return [_read_image(k, f"keyframe {i + 1}") for i, k in enumerate(keyframes)]


def _read_image(image, label: str) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        from hiergen.video import VideoError, read_image
        try:
            return read_image(image)
        except VideoError as e:
            raise ImageError(f"{label}: {e}") from None
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3 or a.size == 0:
        raise ImageError(f"{label}: expected a file path or a uint8 RGB array (H, W, 3), got {a.dtype} {a.shape}")
    return a


def fit_images(images: list[np.ndarray], size: int, label: str) -> np.ndarray:
    """(N, size, size, 3) uint8: images of another size are centre-cropped to a square and resized, with a warning.

    The crop follows `hiergen import-videos` (hiergen.data.conform), so user frames
    are framed like the real videos the model may have been trained on.
    """
    import cv2
    out, changed = [], {}                              # changed: "WxH" -> numbers of the images of that size
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        if (h, w) != (size, size):
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
            img = cv2.resize(np.ascontiguousarray(img[y0:y0 + side, x0:x0 + side]), (size, size), interpolation=interp)
            changed.setdefault(f"{w}x{h}", []).append(str(i + 1))
        out.append(img)
    if changed:
        which = "; ".join(f"{label}{'s' if len(n) > 1 else ''}{'' if len(images) == 1 else ' ' + ', '.join(n)} ({wh})"
                          for wh, n in changed.items())
        cropped = any(len(set(wh.split("x"))) > 1 for wh in changed)
        warnings.warn(f"{which} {'centre-cropped to a square and ' if cropped else ''}resized to the model's "
                      f"{size}x{size}", stacklevel=3)
    return np.stack(out)


def run_generation(prompt: str, models: dict, codec, plan: Plan, tokenizer: TextTokenizer,
                   options: GenerationOptions, progress=None, *, init_image=None, keyframes=None) -> Video:
    """Validate everything, then generate: shared by every backend's pipeline.

    init_image: the user's frame 1 (the t2i stage is skipped); keyframes: 5, 9, 17 or 33
    user frames (at most options.frames) that become evenly spaced frames of the video, first
    and last included, with interpolation rounds filling in between. Both are encoded with the
    codec (vqvae_encoder), so the video holds their decoded tokens, not the pixels given.
    """
    prompt = check_prompt(prompt, tokenizer, options.strict)
    user = read_user_images(options.frames, init_image, keyframes)
    tokens = None
    if user:
        t = time.perf_counter()
        label = "init image" if init_image is not None else "keyframe"
        tokens = codec.encode(fit_images(user, codec.image_size, label))             # (N, g, g)
        encode_s = time.perf_counter() - t
    req = Request(prompt, tokenizer, keyframe_rate(prompt, plan), options.frames, options.sampler(plan),
                  first_frame=tokens[0] if init_image is not None else None,
                  keyframes=tokens if keyframes is not None else None)
    res = generate(req, models, plan, progress)
    if user:
        res.timings = {"encode": encode_s, **res.timings}
    return Video(frames=codec.decode(res.tokens), tokens=res.tokens, fps=res.fps, prompt=prompt, result=res)


class GeneratesVideos:
    """generate() for a pipeline that has `models`, `codec`, `plan` and `tokenizer` (every backend's)."""

    def generate(self, prompt: str, frames: int = 33, seed: int = 0, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, strict: bool = False,
                 progress=None, *, init_image=None, keyframes=None,
                 options: GenerationOptions | None = None) -> Video:
        """A video of `prompt`. The keyword options (or one GenerationOptions, which then replaces them) are
        checked before any work (OptionError); init_image / keyframes: file paths or uint8 RGB arrays (H, W, 3),
        see run_generation. `progress(stage, n_tokens)` may return a per-token callback."""
        if options is None:
            options = GenerationOptions(frames=frames, seed=seed, temperature=temperature, top_k=top_k,
                                        top_p=top_p, strict=strict)
        return run_generation(prompt, self.models, self.codec, self.plan, self.tokenizer, options, progress,
                              init_image=init_image, keyframes=keyframes)


class Pipeline(GeneratesVideos):
    def __init__(self, path: Path, manifest: Manifest, models: dict, codec, providers: list[str]):
        self.path, self.manifest, self.models, self.codec, self.providers = path, manifest, models, codec, providers
        self.plan = manifest.plan
        self.tokenizer = TextTokenizer(manifest.vocab)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, backend: str = "auto", threads: int | None = None) -> "Pipeline":
        """Open a package (default: the shipped models/default), verifying its format and hashes."""
        from hiergen.runtime.backend import OrtCodec, OrtStepModel, providers_for
        from hiergen.runtime.package import open_package

        root = Path(path) if path is not None else DEFAULT_PACKAGE
        manifest = open_package(root)
        providers = providers_for(backend)
        models = {k: OrtStepModel(root, manifest, k, providers, threads) for k in MODELS}
        codec = OrtCodec(root, manifest, providers, threads)
        used = models["t2i"].sess.get_providers()[0]
        log.info("hiergen: %s on %s (asked for %s)", root, used, backend)
        return cls(root, manifest, models, codec, providers)

    @property
    def device(self) -> str:
        return self.models["t2i"].sess.get_providers()[0]

