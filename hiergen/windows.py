"""Window-local attention-plus caches of the interpolation model: which block and slot hold a code.

The interpolation model's attention-plus lets an image token see the text and
keys in its own 3-D Swin window only (training/masks.py: window side `window`,
shifted by window // 2 on odd layers, spanning all frames). So a decode step of
that model needs, per layer, only the block of its window:

    block slots 0 .. text_len-1          the text (every block holds it)
    then per frame f (n_frames of them)  window^2 slots: the window's tokens of
                                         frame f in raster order within the window

block_len = text_len + n_frames * window^2 (91 for 8x8 grids, window 4, 5 frames)
instead of seq_len (331). A shifted window at the grid's edge is cut off; its
slots for rows or columns outside the grid hold nothing (and are masked).

Torch-free: the exporter (LookupTables) and the runtime's arenas use the same
functions, so the graphs and the cache layout cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowLayout:
    """The window blocks of one layer parity (shift = window // 2 on odd layers, 0 on even ones)."""
    text_len: int
    grid: int
    n_frames: int
    window: int
    shift: int

    @property
    def per_axis(self) -> int:
        return (self.grid - 1 + self.shift) // self.window + 1

    @property
    def n_windows(self) -> int:
        return self.per_axis ** 2

    @property
    def block_len(self) -> int:
        return self.text_len + self.n_frames * self.window ** 2

    @property
    def seq_len(self) -> int:
        return self.text_len + self.n_frames * self.grid ** 2

    def place(self, codes) -> tuple[np.ndarray, np.ndarray]:
        """(window, block slot) of each code; a text code has window -1 (it is in every block) and slot = code."""
        codes = np.asarray(codes, np.int64)
        P = self.grid ** 2
        rel = np.maximum(codes - self.text_len, 0)
        frame, within = rel // P, rel % P
        row, col = within // self.grid, within % self.grid
        wr, wc = (row + self.shift) // self.window, (col + self.shift) // self.window
        local = (row + self.shift - wr * self.window) * self.window + (col + self.shift - wc * self.window)
        text = codes < self.text_len
        window = np.where(text, -1, wr * self.per_axis + wc)
        slot = np.where(text, codes, self.text_len + frame * self.window ** 2 + local)
        return window, slot

    def block_codes(self) -> np.ndarray:
        """(n_windows, block_len): the code each block slot holds, -1 where it holds nothing."""
        out = np.full((self.n_windows, self.block_len), -1, np.int64)
        out[:, :self.text_len] = np.arange(self.text_len)
        codes = np.arange(self.text_len, self.seq_len)
        window, slot = self.place(codes)
        out[window, slot] = codes
        return out


def layouts(text_len: int, grid: int, n_frames: int, window: int) -> tuple[WindowLayout, WindowLayout]:
    """The layouts of even (unshifted) and odd (shifted) layers."""
    return tuple(WindowLayout(text_len, grid, n_frames, window, window // 2 if parity else 0) for parity in (0, 1))
