"""The PyTorch reference generator: the orchestrator's loop over PyTorch step models.

Every other runtime is checked against this one. It drives the same
torch-free loop (hiergen.runtime.orchestrator) as the ONNX Runtime and
TensorRT backends, with a static KV cache per attention channel here in
PyTorch, so "same logits -> same tokens" holds by construction.

    from hiergen.training.generate import ReferencePipeline
    pipe = ReferencePipeline.load("checkpoints/transformer", "checkpoints/vqvae/final.safetensors")
    video = pipe.generate("a small red circle moves left slowly", frames=33, seed=0)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from hiergen.config import Kind, ModelConfig
from hiergen.runtime.pipeline import GeneratesVideos
from hiergen.runtime.plan import Plan
from hiergen.tokenizer import TextTokenizer
from hiergen.training import checkpoint as ckpt
from hiergen.training.model import DualTransformer, KVCache
from hiergen.training.model import load_model
from hiergen.training.vqvae import VQVAE, VQVAEConfig


class TorchStepModel:
    """StepModel over a DualTransformer: caches are torch tensors indexed by position code."""

    def __init__(self, model: DualTransformer, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        cfg = model.cfg
        self.text_len, self.grid, self.image_vocab = cfg.text_len, cfg.grid, cfg.image_vocab

    def new_cache(self, batch: int) -> KVCache:
        return KVCache.empty(self.model.cfg, self.model.kind, batch, device=self.device)

    @torch.no_grad()
    def step(self, tokens: np.ndarray, codes: np.ndarray, cache: KVCache) -> np.ndarray:
        t = torch.as_tensor(tokens, device=self.device)
        c = torch.as_tensor(codes, device=self.device)
        # Into an empty cache a prefill attends among its own tokens only, as the exported prefill graphs do.
        logits, new_kv = self.model(t, c, cache if cache.written else None)
        cache.written = True
        slots = c[0]        # every sequence of a step writes the same slots
        for i, kv in enumerate(new_kv):
            cache.k_base[i][:, :, slots], cache.v_base[i][:, :, slots] = kv[0]
            if cache.k_plus is not None:
                cache.k_plus[i][:, :, slots], cache.v_plus[i][:, :, slots] = kv[1]
        return logits.float().cpu().numpy()

    prefill = decode = step          # one forward serves both roles in PyTorch


class TorchCodec:
    def __init__(self, vq: VQVAE, device: str | torch.device = "cpu"):
        self.vq, self.device = vq.eval().to(device), torch.device(device)
        self.image_size = vq.cfg.image_size

    @torch.no_grad()
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self.vq.decode_uint8(torch.as_tensor(tokens, device=self.device)).cpu().numpy()

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        return self.vq.encode(torch.as_tensor(frames, device=self.device)).cpu().numpy()


class ReferencePipeline(GeneratesVideos):
    def __init__(self, models: dict[str, TorchStepModel], codec: TorchCodec, plan: Plan | None = None,
                 tokenizer: TextTokenizer | None = None):
        self.models, self.codec = models, codec
        self.plan = plan or Plan()
        self.tokenizer = tokenizer or TextTokenizer.default()

    @classmethod
    def load(cls, transformer_dir: str | os.PathLike, vqvae: str | os.PathLike, device: str = "cpu",
             plan: Plan | None = None) -> "ReferencePipeline":
        d = Path(transformer_dir)
        backbone = d / "t2i.safetensors"
        models = {k.value: TorchStepModel(load_model(d / f"{k.value}.safetensors", backbone), device) for k in Kind}
        c = ckpt.load(vqvae, VQVAEConfig, kind="vqvae")
        vq = VQVAE(c.config)
        ckpt.load_model_state(vq, c)
        vocab = ckpt.load(backbone, ModelConfig).extra.get("vocab")
        tok = TextTokenizer(tuple(vocab)) if vocab else TextTokenizer.default()
        return cls(models, TorchCodec(vq, device), plan, tok)

