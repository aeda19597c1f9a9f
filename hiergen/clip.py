"""The clip: frames of one video with the caption they show (the unit every tool passes around)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray   # (T, H, W, 3) uint8 RGB
    fps: float
    caption: str

    def __post_init__(self) -> None:
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ValueError(f"clip frames must be uint8 (T, H, W, 3) RGB, got {f.dtype} {f.shape}")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return (self.n_frames - 1) / self.fps
