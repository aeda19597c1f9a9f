"""vqvae_decoder: int64 tokens (N, h, w) -> uint8 RGB frames (N, H, W, 3); clamp, scale and round inside."""
from __future__ import annotations

import torch

from hiergen.export.fragments.contract import Contract, TensorSpec
from hiergen.runtime.manifest import fragment_name
from hiergen.training.vqvae import VQVAE, VQVAEConfig

NAME = fragment_name("vqvae", "decoder")


def contract(cfg: VQVAEConfig) -> Contract:
    s, g = cfg.image_size, cfg.grid
    return Contract(NAME,
                    inputs=(TensorSpec("tokens", "int64", ("frames", g, g)),),
                    outputs=(TensorSpec("frames", "uint8", ("frames", s, s, 3)),),
                    axes={"frames": (1, 5, 33)}, sample_axes={"frames": 2})


class Graph(torch.nn.Module):
    def __init__(self, vq: VQVAE):
        super().__init__()
        self.vq = vq

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vq.decode_uint8(tokens)     # (N, H, W, 3) uint8


def sample(cfg: VQVAEConfig) -> dict[str, torch.Tensor]:
    n = contract(cfg).sample_axes["frames"]
    g = torch.Generator().manual_seed(0)
    return {"tokens": torch.randint(0, cfg.n_codes, (n, cfg.grid, cfg.grid), generator=g)}
