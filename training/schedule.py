"""Learning-rate schedules: linear warm-up, then cosine decay to a floor, or held then decayed (WSD)."""
from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, warmup: int, steps: int, floor_frac: float) -> float:
    """Learning rate at `step` (0-based): peak * (step + 1) / warmup, then cosine down to floor_frac * peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def warmup_stable_decay(step: int, peak: float, warmup: int, steps: int, floor_frac: float,
                        decay_frac: float) -> float:
    """Linear warm-up, then the peak held, then a linear decay to floor_frac * peak over the last
    decay_frac of the steps. The long runs use it: raising `steps` before the decay starts continues
    the same run, where a cosine schedule would have decayed already."""
    if step < warmup:
        return peak * (step + 1) / warmup
    start = wsd_decay_start(steps, decay_frac)
    if step < start:
        return peak
    t = (step - start) / max(1, steps - start)
    return peak * (1 - (1 - floor_frac) * min(t, 1.0))


def wsd_decay_start(steps: int, decay_frac: float) -> int:
    """The first step of the decay: the run's resume point here can continue the stable phase later."""
    return steps - int(decay_frac * steps)
