"""The learning-rate schedule every trainer uses: linear warm-up, then cosine decay to a floor."""
from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, warmup: int, steps: int, floor_frac: float) -> float:
    """Learning rate at `step` (0-based): peak * (step + 1) / warmup, then cosine down to floor_frac * peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
