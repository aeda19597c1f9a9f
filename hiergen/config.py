"""The frozen architecture dataclass shared by training, export and the runtime manifest."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    """Which attention-plus pattern a model uses (the backbone is the same for all)."""
    T2I = "t2i"              # the backbone alone: text-to-image, frame 1
    KEYFRAME = "keyframe"    # attention-plus: full causal attention over all frames
    INTERP = "interp"        # attention-plus: 3-D Swin windows; frames 1, 3, 5 given


@dataclass(frozen=True)
class ModelConfig:
    text_vocab: int               # size of the text tokenizer's vocabulary
    image_vocab: int = 512        # VQ-VAE codebook entries
    text_len: int = 11            # [rate] + 9 words + [boi]
    grid: int = 8                 # image tokens per frame side (64 px / compression 8)
    n_frames: int = 5
    d_model: int = 192
    n_layer: int = 6
    n_head: int = 6
    mlp_ratio: int = 4
    window: int = 4               # Swin window side for the interpolation model (half the grid)

    def __post_init__(self) -> None:
        problems = []
        if self.d_model % self.n_head:
            problems.append(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.window < 1 or self.grid % self.window:
            problems.append(f"window {self.window} does not divide the grid side {self.grid}: "
                            f"choose one of {[w for w in range(1, self.grid + 1) if self.grid % w == 0]}")
        if self.n_frames != 5:
            problems.append(f"n_frames must be 5 (CogVideo's window), got {self.n_frames}")
        if self.text_len < 3:
            problems.append(f"text_len {self.text_len} leaves no room for words between [rate] and [boi]")
        if problems:
            raise ValueError("bad model config: " + "; ".join(problems))

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def seq_len(self) -> int:
        return self.text_len + self.n_frames * self.tokens_per_frame

    @property
    def block_len(self) -> int:
        """Slots of a frame-local cache (attention-base: text + one frame), exported step graphs only."""
        return self.text_len + self.tokens_per_frame

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}: the checkpoint is from a newer hiergen")
        return cls(**d)
