"""The VQ-VAE frame tokenizer: 64x64 RGB frames <-> 8x8 grids of codebook indices.

A small convolutional encoder maps a frame to one `code_dim` vector per 8x8
patch, each vector is replaced by its nearest codebook entry, and a mirrored
decoder paints the frame back from the entries. The transformer only ever sees
the indices (docs/model.md, "The algorithm in brief").

Three measures keep the codebook alive (every entry in use, none collapsed):
- EMA updates: entries are running means of the encoder outputs assigned to
  them (van den Oord et al. 2017, appendix), not trained by the optimiser;
- initialisation from data: k-means++ seeding on the encoder outputs of the
  first training batch;
- restart of dead codes: an entry unused for `dead_after` steps is moved onto
  a recent encoder output, drawn with probability proportional to its squared
  distance from the codebook, so restarts land where reconstruction is worst.

The graph is kept to ops that export cleanly to ONNX (convolutions, group
norm, SiLU, nearest upsampling, a matmul + argmin for the nearest code, an
embedding gather). The training-only codebook updates run outside `encode`
and `decode`, in `VQVAE.forward` under `self.training`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hiergen.training.checkpoint import CheckpointError, load, load_model_state


@dataclass(frozen=True)
class VQVAEConfig:
    image_size: int = 64                     # frames are square, image_size x image_size RGB
    widths: tuple[int, ...] = (32, 64, 128)  # channels after each stride-2 stage; 3 stages -> /8
    n_res: int = 0                           # residual blocks after each down stage / before each up stage
    n_mid: int = 2                           # residual blocks at the token resolution (encoder and decoder)
    res_hidden: int = 64                     # bottleneck width inside a residual block (3x3 in, 1x1 out)
    dec_out_width: int = 32                  # channels of the decoder at full resolution
    n_codes: int = 512                       # codebook size (the transformer's image vocabulary)
    code_dim: int = 32                       # width of one codebook entry
    groups: int = 8                          # group-norm groups
    commitment: float = 0.25                 # weight of ||z - sg(e)||^2 in the loss
    ema_decay: float = 0.99                  # codebook EMA decay
    ema_eps: float = 1e-5                    # Laplace smoothing of the EMA counts
    dead_after: int = 100                    # training steps without use before a code is restarted

    def __post_init__(self) -> None:
        if isinstance(self.widths, list):    # JSON round trip gives lists; keep the dataclass hashable
            object.__setattr__(self, "widths", tuple(self.widths))
        if self.image_size % self.compression:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the compression "
                             f"{self.compression} (2 ** len(widths)); choose e.g. 64 with 3 widths")
        if self.n_codes < 2 or self.n_codes > 32767:
            raise ValueError(f"n_codes {self.n_codes} is out of range: tokens are stored as int16, "
                             f"use 2..32767 (default 512)")
        for w in (*self.widths, self.dec_out_width, *(min(w, self.res_hidden) for w in self.widths)):
            if w % self.groups:
                raise ValueError(f"width {w} is not divisible by groups={self.groups}; "
                                 f"pick widths that are multiples of {self.groups}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay {self.ema_decay} must lie in (0, 1), e.g. 0.99")
        if self.dead_after < 1:
            raise ValueError(f"dead_after {self.dead_after} must be >= 1 training step")

    @property
    def compression(self) -> int:
        return 2 ** len(self.widths)

    @property
    def grid(self) -> int:
        """Tokens per side of a frame (8 for 64x64 frames)."""
        return self.image_size // self.compression


# ------------------------------------------------------------ pixel normalisation
# Kept as a pair of plain functions so export can put them inside the ONNX graphs.
def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """float (N, 3, H, W), nominally in [-1, 1] -> uint8 RGB (N, H, W, 3), rounded half to even."""
    x = ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1)


# ------------------------------------------------------------ modules
def _norm_act(width: int, groups: int) -> nn.Module:
    return nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU())


class ResBlock(nn.Module):
    """x + conv1x1(silu(norm(conv3x3(silu(norm(x)))))): a bottleneck keeps the weights few."""

    def __init__(self, width: int, hidden: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = nn.Conv2d(width, hidden, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, hidden)
        self.conv2 = nn.Conv2d(hidden, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        w = cfg.widths
        self.conv_in = nn.Conv2d(3, w[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, width in enumerate(w):
            prev = w[max(i - 1, 0)]
            # pre-activation stride-2 4x4 conv: halves the side; the norm + SiLU keep a stack of
            # down-samplings from collapsing into one linear map when n_res is 0
            layers += [_norm_act(prev, cfg.groups), nn.Conv2d(prev, width, 4, stride=2, padding=1)]
            layers += [ResBlock(width, min(width, cfg.res_hidden), cfg.groups) for _ in range(cfg.n_res)]
        layers += [ResBlock(w[-1], min(w[-1], cfg.res_hidden), cfg.groups) for _ in range(cfg.n_mid)]
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(cfg.groups, w[-1])
        self.conv_out = nn.Conv2d(w[-1], cfg.code_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(x))                     # (N, C, h, w)
        return self.conv_out(F.silu(self.norm_out(h)))     # (N, D, h, w)


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        w = cfg.widths
        self.conv_in = nn.Conv2d(cfg.code_dim, w[-1], 3, padding=1)
        layers: list[nn.Module] = [ResBlock(w[-1], min(w[-1], cfg.res_hidden), cfg.groups) for _ in range(cfg.n_mid)]
        outs = list(reversed(w[:-1])) + [cfg.dec_out_width]   # width after each up stage
        width = w[-1]
        for out in outs:
            layers += [ResBlock(width, min(width, cfg.res_hidden), cfg.groups) for _ in range(cfg.n_res)]
            layers += [_norm_act(width, cfg.groups), nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(width, out, 3, padding=1)]
            width = out
        self.body = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(cfg.groups, width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        h = self.body(self.conv_in(q))                     # (N, C, H, W)
        return self.conv_out(F.silu(self.norm_out(h)))     # (N, 3, H, W)


class Codebook(nn.Module):
    """Nearest-neighbour quantiser whose entries are EMA means of their assigned vectors.

    Everything here is a buffer, not a parameter: the optimiser never touches
    the codebook, and the state dict carries the EMA state so a resumed run
    continues exactly where it stopped.
    """

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        k, d = cfg.n_codes, cfg.code_dim
        self.register_buffer("embed", torch.zeros(k, d))           # (K, D) the codebook
        self.register_buffer("ema_count", torch.zeros(k))          # (K,)   EMA of assignments
        self.register_buffer("ema_sum", torch.zeros(k, d))         # (K, D) EMA of assigned vectors
        self.register_buffer("last_used", torch.zeros(k, dtype=torch.int64))  # step of last use
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (M, D) -> index of the nearest entry (M,) int64."""
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; the first term is the same for every entry.
        dist = (self.embed * self.embed).sum(1) - 2.0 * z @ self.embed.t()    # (M, K)
        return dist.argmin(1)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (...) int64 -> entries (..., D)."""
        return F.embedding(idx, self.embed)

    # -------------------------------------------------------- training-only updates
    @torch.no_grad()
    def init_from_data(self, z: torch.Tensor, gen: torch.Generator) -> None:
        """k-means++ seeding on encoder outputs z (M, D): spread-out entries, no duplicates."""
        k = self.cfg.n_codes
        z = z.float()
        # The first batch of a dataset with a plain background holds far fewer distinct
        # vectors than entries; a little noise keeps every pick distinct.
        scale = z.std().clamp_min(1e-3)
        if z.shape[0] < k:
            z = z.repeat((k + z.shape[0] - 1) // z.shape[0], 1)
        z = z + 1e-3 * scale * torch.randn(z.shape, generator=gen, device=z.device)
        chosen = [int(torch.randint(z.shape[0], (1,), generator=gen, device=z.device))]
        d2 = ((z - z[chosen[0]]) ** 2).sum(1)                              # (M,)
        for _ in range(k - 1):
            i = int(torch.multinomial(d2 + 1e-12, 1, generator=gen))
            chosen.append(i)
            d2 = torch.minimum(d2, ((z - z[i]) ** 2).sum(1))
        self.embed.copy_(z[chosen])
        self.ema_sum.copy_(self.embed)
        self.ema_count.fill_(1.0)
        self.last_used.zero_()
        self.initialised.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, idx: torch.Tensor, step: int) -> None:
        """Move each used entry towards the mean of its assigned vectors z (M, D)."""
        cfg = self.cfg
        k = cfg.n_codes
        counts = torch.bincount(idx, minlength=k).to(z.dtype)              # (K,)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, idx, z)        # (K, D)
        self.ema_count.mul_(cfg.ema_decay).add_(counts, alpha=1 - cfg.ema_decay)
        self.ema_sum.mul_(cfg.ema_decay).add_(sums, alpha=1 - cfg.ema_decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + cfg.ema_eps) / (n + k * cfg.ema_eps) * n
        self.embed.copy_(self.ema_sum / smoothed[:, None])
        self.last_used[counts > 0] = step

    @torch.no_grad()
    def restart_dead(self, z: torch.Tensor, idx: torch.Tensor, step: int, gen: torch.Generator) -> int:
        """Move entries unused for `dead_after` steps onto encoder outputs z (M, D); returns how many."""
        dead = torch.nonzero(step - self.last_used >= self.cfg.dead_after).flatten()
        if dead.numel() == 0:
            return 0
        # Draw proportional to the squared quantisation error: restarts go where
        # the codebook serves the data worst, not to the plentiful background.
        err = ((z - self.embed[idx]) ** 2).sum(1)                          # (M,)
        n = min(dead.numel(), int((err > 0).sum()))
        if n == 0:
            return 0
        dead = dead[:n]
        picks = torch.multinomial(err, n, replacement=False, generator=gen)
        one = 1.0 - self.cfg.ema_decay                                     # weight of one assignment
        self.embed[dead] = z[picks]
        self.ema_sum[dead] = z[picks] * one
        self.ema_count[dead] = one
        self.last_used[dead] = step
        return n


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.codebook = Codebook(cfg)
        self.decoder = Decoder(cfg)

    # -------------------------------------------------------- the exported API
    def _as_input(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype == torch.uint8:
            frames = normalize(frames)                                      # (N, 3, H, W)
        n = self.cfg.image_size
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (3, n, n):
            raise ValueError(f"expected frames (N, {n}, {n}, 3) uint8 or (N, 3, {n}, {n}) float in "
                             f"[-1, 1], got {tuple(frames.shape)} {frames.dtype}; resize the frames "
                             f"to the tokenizer's image_size={n}")
        return frames

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1] -> tokens (N, h, w) int64."""
        z = self.encoder(self._as_input(frames))                           # (N, D, h, w)
        n, d, h, w = z.shape
        z = z.permute(0, 2, 3, 1).reshape(n * h * w, d)                    # (N*h*w, D)
        return self.codebook.nearest(z).reshape(n, h, w)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, h, w) int64 -> frames float (N, 3, H, W), nominally in [-1, 1]."""
        q = self.codebook.lookup(tokens).permute(0, 3, 1, 2)              # (N, D, h, w)
        return self.decoder(q)

    def decode_uint8(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, h, w) int64 -> frames uint8 RGB (N, H, W, 3)."""
        return denormalize(self.decode(tokens))

    # -------------------------------------------------------- training
    def forward(self, x: torch.Tensor, step: int = 0, gen: torch.Generator | None = None) -> dict:
        """x float (N, 3, H, W) in [-1, 1] -> reconstruction, losses and codebook statistics.

        In training mode this also updates the codebook (init on the first call,
        EMA every call, dead-code restarts); `gen` drives its random choices.
        """
        cb = self.codebook
        z = self.encoder(x).float()                                         # (N, D, h, w)
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(n * h * w, d)                  # (M, D)
        restarted = 0
        if self.training:
            if gen is None:
                raise ValueError("training forward needs a torch.Generator for codebook init/restarts")
            if not bool(cb.initialised):
                cb.init_from_data(flat.detach(), gen)
            idx = cb.nearest(flat.detach())                                 # (M,)
            cb.ema_update(flat.detach(), idx, step)
            restarted = cb.restart_dead(flat.detach(), idx, step, gen)
        else:
            idx = cb.nearest(flat)
        q = cb.lookup(idx)                                                  # (M, D)
        commit = F.mse_loss(flat, q.detach())
        q = flat + (q - flat).detach()                                      # straight-through gradient
        recon = self.decoder(q.reshape(n, h, w, d).permute(0, 3, 1, 2)).float()  # (N, 3, H, W)
        rec_loss = F.mse_loss(recon, x)
        counts = torch.bincount(idx, minlength=self.cfg.n_codes).float()
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return {
            "recon": recon,
            "tokens": idx.reshape(n, h, w),
            "loss": rec_loss + self.cfg.commitment * commit,
            "rec_loss": rec_loss.detach(),
            "commit_loss": commit.detach(),
            "perplexity": perplexity,
            "used": int((counts > 0).sum()),
            "restarted": restarted,
        }


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_vqvae(path: str | os.PathLike, device: str | torch.device = "cpu") -> VQVAE:
    """Rebuild a VQ-VAE from a checkpoint (its config travels inside), in eval mode."""
    ckpt = load(path, VQVAEConfig, kind="vqvae")
    model = VQVAE(ckpt.config)
    load_model_state(model, ckpt)
    if not bool(model.codebook.initialised):
        raise CheckpointError(f"{path} holds an untrained codebook; train the tokenizer first")
    return model.to(device).eval()
