"""Activations captured through the runtime while it generates: the calibration set, and the tapes the
next-token agreement check replays.

    prompts = calibration_prompts(16, seed=0)                # training-split captions, every word held
    samples = capture("models/default", prompts, seed=0)     # fragment name -> [feeds], every graph

Calibration data is real generation, not random tensors: the fp32 package
generates each prompt's 33-frame video through the runtime (ONNX Runtime, CPU),
and a wrapper around each step model keeps copies of what each graph reads:
the prefill graph's tokens, and at decode steps the decode graph's bound
inputs (tokens, codes, the arena's frame and window blocks) and the step
graph's (the same token through the sequence caches). Steps are kept by
seeded reservoir sampling, `keep` per graph, uniform over all steps of all
prompts. The VQ-VAE decoder reads each video's tokens; the encoder, which
generation runs only on user frames, reads frames of the prompts' rendered
training clips.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from hiergen.runtime.manifest import Manifest

Feeds = dict[str, np.ndarray]
SPLIT = "train"                  # calibration prompts come from the training split only, never val or test
DEFAULT_PROMPTS = 16             # enough to hold every caption word (8 colours need 8 prompts) and then some


def calibration_prompts(n: int, seed: int) -> list[str]:
    """n distinct captions of training-split clips, drawn with `seed`, that hold every caption word first
    (never a held-out colour/shape pair: training clips have none; never the test split, whose prompts
    `hiergen eval --prompts` scores).

    The static int8 ranges (the prefill graphs, which read each prompt's words once) are fitted to what
    calibration reads: a colour or shape word no prompt holds meets ranges fitted without it, and its
    activations are clipped. So each draw takes the caption holding the most words no earlier prompt holds
    (the seeded order breaks ties) until every word is held or n are drawn; the rest follow the seeded
    order. `uncovered` says which words a set of prompts lacks."""
    from hiergen.synth import caption_for, seeds_for_split
    rng = np.random.default_rng([seed, 0xCA1])
    pool = seeds_for_split(SPLIT, max(20 * n, 400))
    rest = list(dict.fromkeys(str(caption_for(int(s))) for s in rng.permutation(pool)))
    if len(rest) < n:
        raise ValueError(f"only {len(rest)} distinct training captions among {len(pool)} clips; ask for fewer "
                         "prompts")
    out: list[str] = []
    missing = set(uncovered([]))
    while len(out) < n and missing:
        best = max(rest, key=lambda c: len(missing.intersection(c.split())))     # first of the best: seeded
        if not missing.intersection(best.split()):
            break                                     # the pool holds no missing word (not with 400 clips)
        out.append(best)
        rest.remove(best)
        missing.difference_update(best.split())
    return out + rest[:n - len(out)]


def uncovered(prompts: list[str]) -> list[str]:
    """The caption words (hiergen.captions.VOCABULARY, in its order) that none of `prompts` holds."""
    from hiergen.captions import VOCABULARY
    held = {w for p in prompts for w in p.lower().split()}
    return [w for w in VOCABULARY if w not in held]


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Calibration prompts from a file, one caption per line (blank lines and # comments skipped). A caption
    with a held-out colour/shape pair is refused: those exist only in the test split."""
    from hiergen.captions import CaptionError, parse
    lines = [ln.strip() for ln in open(path, encoding="utf-8").read().splitlines()]
    prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    for p in prompts:
        try:
            held_out = parse(p).held_out
        except CaptionError:
            continue                 # free text: the model reads it as words; nothing of the test split
        if held_out:
            raise ValueError(f"{path}: {p!r} has a held-out colour/shape pair (test split only); calibrate on "
                             "training captions")
    return prompts


class _Reservoir:
    """Seeded reservoir sampling per fragment: `keep` input sets, uniform over all offered."""

    def __init__(self, keep: int, rng: np.random.Generator):
        self.keep, self.rng = keep, rng
        self.samples: dict[str, list[Feeds]] = {}
        self.seen: dict[str, int] = {}

    def offer(self, fragment: str, make) -> None:
        n = self.seen.get(fragment, 0)
        self.seen[fragment] = n + 1
        kept = self.samples.setdefault(fragment, [])
        if len(kept) < self.keep:
            kept.append(make())
        elif (j := int(self.rng.integers(n + 1))) < self.keep:
            kept[j] = make()                       # copied only when kept


def _copies(feeds: Feeds) -> Feeds:
    return {k: np.array(v) for k, v in feeds.items()}


class Recorder:
    """A StepModel (runtime/orchestrator.py) around the runtime's OrtStepModel that offers each graph's
    inputs to the reservoir before the graph runs."""

    def __init__(self, inner, manifest: Manifest, model: str, reservoir: _Reservoir):
        step = manifest.fragment(model, "step")
        self.inner, self.res = inner, reservoir
        self.step_name, self.prefill_name, self.decode_name = step.name, step.prefill, step.decode
        self.text_len, self.grid, self.image_vocab = inner.text_len, inner.grid, inner.image_vocab
        self.tokens_name, self.codes_name = inner.tokens_name, inner.codes_name

    def new_cache(self, batch: int):
        return self.inner.new_cache(batch)

    def prefill(self, tokens, codes, cache):
        self.res.offer(self.prefill_name, lambda: {self.tokens_name: tokens.copy(), self.codes_name: codes.copy()})
        return self.inner.prefill(tokens, codes, cache)

    def decode(self, tokens, codes, cache):
        self.res.offer(self.decode_name, lambda: cache.decode_inputs(tokens, codes))
        self.res.offer(self.step_name, lambda: _copies(cache.step_inputs(tokens, codes)))
        return self.inner.decode(tokens, codes, cache)


class CodecRecorder:
    def __init__(self, inner, manifest: Manifest, reservoir: _Reservoir):
        self.inner, self.res = inner, reservoir
        self.name = manifest.fragment("vqvae", "decoder").name
        self.input = manifest.fragment("vqvae", "decoder").inputs[0].name
        self.image_size = inner.image_size

    def decode(self, tokens):
        self.res.offer(self.name, lambda: {self.input: np.ascontiguousarray(tokens, np.int64)})
        return self.inner.decode(tokens)

    def encode(self, frames):
        return self.inner.encode(frames)


def capture(package: str | os.PathLike, prompts: list[str], seed: int, keep: int = 24, frames: int = 33,
            progress=None) -> dict[str, list[Feeds]]:
    """Every fragment's calibration inputs from generating `prompts` (prompt i with seed + i) with the fp32
    package through the runtime (CPU provider): fragment name -> up to `keep` feed dicts."""
    import warnings

    from hiergen.runtime.pipeline import Pipeline
    from hiergen.synth import render

    pipe = Pipeline.load(package, backend="cpu")
    m = pipe.manifest
    res = _Reservoir(keep, np.random.default_rng([seed, 0xCA2]))
    pipe.models = {k: Recorder(v, m, k, res) for k, v in pipe.models.items()}
    pipe.codec = CodecRecorder(pipe.codec, m, res)
    enc = m.fragment("vqvae", "encoder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # words a free-text prompt holds that the model never saw
        for i, p in enumerate(prompts):
            pipe.generate(p, frames=frames, seed=seed + i)
            try:                                     # the encoder: frames of the caption's rendered clip
                clip = render(p, seed=seed + i, size=m.image_size)
                pick = np.linspace(0, clip.n_frames - 1, 4).round().astype(int)
                res.offer(enc.name, lambda: {enc.inputs[0].name: np.ascontiguousarray(clip.frames[pick])})
            except ValueError:
                pass                                 # free text has no clip to render
            if progress:
                progress(i + 1, len(prompts))
    return res.samples


# ------------------------------------------------------------ teacher forcing
@dataclass
class Tape:
    """Every call a generation made to one transformer, in order: ("new", batch), ("prefill" | "decode",
    tokens, codes, logits)."""
    model: str
    events: list = field(default_factory=list)


class TapeRecorder:
    """A StepModel wrapper that writes a Tape (the reference run of the agreement check)."""

    def __init__(self, inner, tape: Tape):
        self.inner, self.tape = inner, tape
        self.text_len, self.grid, self.image_vocab = inner.text_len, inner.grid, inner.image_vocab

    def new_cache(self, batch):
        self.tape.events.append(("new", batch))
        return self.inner.new_cache(batch)

    def prefill(self, tokens, codes, cache):
        out = self.inner.prefill(tokens, codes, cache)
        self.tape.events.append(("prefill", tokens.copy(), codes.copy(), np.array(out[:, -1], np.float32)))
        return out

    def decode(self, tokens, codes, cache):
        out = self.inner.decode(tokens, codes, cache)
        self.tape.events.append(("decode", tokens.copy(), codes.copy(), np.array(out[:, -1], np.float32)))
        return out


STAGES = {"t2i": ["t2i"], "keyframe": ["keyframe"], "interp": ["interp1", "interp2", "interp3"]}


def replay(tape: Tape, model) -> dict[str, dict]:
    """Run `model` (another package's StepModel) on the tape's exact inputs (teacher forcing: the same
    prefix at every step); per stage the positions compared, how many have the reference's top-1 token,
    and the largest absolute logit difference."""
    out: dict[str, dict] = {}
    cache, stage = None, None
    rounds = iter(STAGES[tape.model])
    for ev in tape.events:
        if ev[0] == "new":
            cache, stage = model.new_cache(ev[1]), next(rounds, stage)
            continue
        kind, tokens, codes, ref = ev
        got = (model.prefill if kind == "prefill" else model.decode)(tokens, codes, cache)[:, -1]
        s = out.setdefault(stage, {"positions": 0, "top1_agree": 0, "max_logit_diff": 0.0})
        s["positions"] += len(ref)
        s["top1_agree"] += int((got.argmax(-1) == ref.argmax(-1)).sum())
        s["max_logit_diff"] = max(s["max_logit_diff"], float(np.abs(got.astype(np.float32) - ref).max()))
    return out
