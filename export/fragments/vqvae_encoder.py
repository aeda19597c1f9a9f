"""vqvae_encoder: uint8 RGB frames (N, H, W, 3) -> int64 tokens (N, h, w); normalisation inside the graph."""
from __future__ import annotations

import torch

from hiergen.export.fragments.contract import Contract, TensorSpec
from hiergen.runtime.manifest import fragment_name
from hiergen.training.vqvae import VQVAE, VQVAEConfig

NAME = fragment_name("vqvae", "encoder")


def contract(cfg: VQVAEConfig) -> Contract:
    s, g = cfg.image_size, cfg.grid
    return Contract(NAME,
                    inputs=(TensorSpec("frames", "uint8", ("frames", s, s, 3)),),
                    outputs=(TensorSpec("tokens", "int64", ("frames", g, g)),),
                    axes={"frames": (1, 5, 33)}, sample_axes={"frames": 2})


class Graph(torch.nn.Module):
    def __init__(self, vq: VQVAE):
        super().__init__()
        self.vq = vq

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(frames)           # (N, h, w) int64


def sample(cfg: VQVAEConfig) -> dict[str, torch.Tensor]:
    n = contract(cfg).sample_axes["frames"]
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.randint(0, 256, (n, cfg.image_size, cfg.image_size, 3), generator=g, dtype=torch.uint8)}
