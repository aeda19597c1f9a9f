"""The frame-by-frame baseline of the ablation (GODIVA/NUWA style), torch-free.

    frame 1          <- t2i model (as in the hierarchical loop)
    frames 2-5       <- a sequential model trained at ONE fixed rate (the native 16 fps)
    then, window by window: the last `overlap` frames are given as the window's
                     first frames and the model makes the rest, until `frames` exist

The sequential model is a keyframe-kind model trained with `hiergen train
keyframe --fixed-rate 16`: it sees 5 consecutive native frames, so 33 frames
span 2 s of action whatever the caption's speed. Same sampler, same random
streams per window, same guidance as the plan's keyframe stage.
"""
from __future__ import annotations

import time

import numpy as np

from hiergen.runtime.orchestrator import Request, Result, StepModel, fill_frames
from hiergen.runtime.plan import Plan

WINDOW = 5


def generate_frame_by_frame(req: Request, models: dict[str, StepModel], plan: Plan, overlap: int,
                            rate: int = 16) -> Result:
    """Tokens of `req.frames` frames made by sliding a 5-frame window with `overlap` given frames."""
    if not 1 <= overlap < WINDOW:
        raise ValueError(f"overlap must be 1..{WINDOW - 1} frames, got {overlap}")
    t2i, seq = models["t2i"], models["keyframe"]
    g = t2i.grid
    texts = req.texts(rate)
    res = Result(tokens=np.zeros(0), fps=float(rate))
    t = time.perf_counter()
    frames = [fill_frames(t2i, texts, {}, [0], plan.guidance["t2i"], req.sampler, np.array([0]))[0][0]]
    res.timings["t2i"] = time.perf_counter() - t
    t = time.perf_counter()
    w = 0
    while len(frames) < req.frames:
        given = {i: f[None] for i, f in enumerate(frames[-overlap:])} if w else {0: frames[0][None]}
        todo = list(range(len(given), WINDOW))
        made = fill_frames(seq, texts, given, todo, plan.guidance["keyframe"], req.sampler,
                           np.array([(1 << 16) + (w << 8)]))
        frames += [made[f][0] for f in todo]
        w += 1
    res.timings["windows"] = time.perf_counter() - t
    res.steps["windows"] = w
    res.tokens = np.stack(frames[:req.frames]).reshape(req.frames, g, g)
    return res
