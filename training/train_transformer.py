"""Train the backbone (t2i) and the two video models (keyframe, interp) on token shards.

Order: the backbone first, on single frames with their captions; then each
video model on top of the frozen backbone. AdamW with warm-up and cosine
decay, gradient clipping, bf16 autocast on CUDA. Every batch is drawn from a
generator seeded by (seed, step, rank), so a run resumed from its last
checkpoint continues exactly as if it had never stopped. Under torchrun the
same code runs DistributedDataParallel (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from hiergen.config import Kind, ModelConfig
from hiergen.progress import Progress
from hiergen.rates import RATES
from hiergen.tokenizer import TextTokenizer
from hiergen.training import checkpoint as ckpt
from hiergen.training.model import DualTransformer
from hiergen.training.schedule import warmup_cosine
from hiergen.training.sequences import IGNORE, TokenClip, make_batch, usable


@dataclass(frozen=True)
class Recipe:
    steps: int = 3000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    min_lr_frac: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    text_dropout: float = 0.1
    fixed_rate: int | None = None   # one rate, windows anywhere: the frame-by-frame baseline / one-rate ablation
    pretrained_backbone: bool = True  # False: the ablation's video model, random-initialised and trained whole
    init_from: str | None = None      # warm start: this checkpoint's weights, a fresh optimiser and schedule
    seed: int = 0
    ckpt_every: int = 200
    eval_every: int = 200


class TrainError(ValueError):
    """A training set-up that cannot work; the message names the fix."""


def lr_at(step: int, r: Recipe) -> float:
    return warmup_cosine(step, r.lr, r.warmup, r.steps, r.min_lr_frac)


def _dist() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_setup(kind: Kind, cfg: ModelConfig, tok: TextTokenizer, clips: list[TokenClip], recipe: Recipe) -> None:
    problems = []
    if cfg.text_len != tok.prefix_len:
        problems.append(f"model text_len {cfg.text_len} != tokenizer prefix {tok.prefix_len} "
                        f"([rate] + {tok.max_words} words + [boi]); set text_len={tok.prefix_len}")
    if cfg.text_vocab != len(tok.vocab):
        problems.append(f"model text_vocab {cfg.text_vocab} != tokenizer vocabulary {len(tok.vocab)}")
    if clips and clips[0].tokens.shape[1:] != (cfg.grid, cfg.grid):
        problems.append(f"token grid {clips[0].tokens.shape[1:]} != model grid {cfg.grid}; "
                        "re-tokenize with the matching VQ-VAE or change grid")
    if not usable(clips, kind):
        problems.append(f"no clip can give a {kind.value} sample (too short?); render longer clips")
    if recipe.fixed_rate is not None and (kind != Kind.KEYFRAME or recipe.fixed_rate not in RATES):
        problems.append(f"a fixed rate trains the sequential (keyframe) model at one of {RATES} fps; "
                        f"got {kind.value} at {recipe.fixed_rate}")
    if recipe.steps < 1 or recipe.batch < 1 or recipe.lr <= 0:
        problems.append("steps, batch and lr must be positive")
    for c in clips[:50]:
        n_words = len(c.caption.split())
        if n_words > tok.max_words:
            problems.append(f"caption {c.caption!r} has {n_words} words, the model reads {tok.max_words}")
            break
    if problems:
        raise TrainError(f"cannot train {kind.value}: " + "; ".join(problems))


def build_model(kind: Kind, cfg: ModelConfig, backbone: str | os.PathLike | None,
                pretrained: bool = True) -> DualTransformer:
    model = DualTransformer(cfg, kind)
    if kind == Kind.T2I or not pretrained:
        return model                 # everything random and trainable
    if backbone is None:
        raise TrainError(f"{kind.value} training needs the trained backbone: pass --backbone t2i.safetensors "
                         "(train it first with `hiergen train t2i`)")
    c = ckpt.load(backbone, ModelConfig, kind="t2i")
    if c.config != cfg:
        raise TrainError(f"backbone {backbone} was trained with {c.config}, not {cfg}")
    missing, unexpected = model.load_state_dict(c.model_state, strict=False)
    if unexpected or any(model.is_backbone(n) for n in missing):
        raise TrainError(f"backbone {backbone} does not fit the model (missing {missing}, unexpected {unexpected})")
    model.init_plus_from_base()      # plus-QKV copies the TRAINED base QKV
    model.freeze_backbone()
    return model


def _loss(model, batch, device, autocast) -> torch.Tensor:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits, _ = model(batch.tokens.to(device), batch.codes.to(device))
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.to(device).flatten(), ignore_index=IGNORE)


@torch.no_grad()
def evaluate(model, clips, kind, cfg, tok, device, autocast, n_batches=4, batch=32,
             fixed_rate: int | None = None) -> float:
    model.eval()
    rng = np.random.default_rng(12345)   # the same validation batches every time
    losses = [float(_loss(model, make_batch(clips, kind, cfg, tok, rng, batch, text_dropout=0.0,
                                            fixed_rate=fixed_rate), device, autocast))
              for _ in range(n_batches)]
    model.train()
    return float(np.mean(losses))


def train(kind: Kind | str, cfg: ModelConfig, train_clips: list[TokenClip], val_clips: list[TokenClip],
          out_dir: str | os.PathLike, recipe: Recipe = Recipe(), backbone: str | os.PathLike | None = None,
          resume: bool = True, tok: TextTokenizer | None = None, show_progress: bool = True) -> Path:
    """Train one model; checkpoints `<out>/<kind>.last.safetensors`, final `<out>/<kind>.safetensors`."""
    kind = Kind(kind)
    tok = tok or TextTokenizer.default()
    fr = recipe.fixed_rate
    train_clips, val_clips = usable(train_clips, kind, fr), usable(val_clips, kind, fr) or usable(train_clips, kind, fr)
    check_setup(kind, cfg, tok, train_clips, recipe)
    rank, world = _dist()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    autocast = device.type == "cuda"
    out = Path(out_dir)
    last, final = out / f"{kind.value}.last.safetensors", out / f"{kind.value}.safetensors"

    torch.manual_seed(recipe.seed)
    model = build_model(kind, cfg, backbone, recipe.pretrained_backbone).to(device)
    if recipe.init_from:
        warm = ckpt.load(recipe.init_from, ModelConfig, kind=kind.value)
        if warm.config != cfg:
            raise TrainError(f"--init {recipe.init_from} was trained with {warm.config}, not {cfg}")
        model.load_state_dict(warm.model_state, strict=kind == Kind.T2I or not recipe.pretrained_backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))
    step, history = 0, {"step": [], "loss": [], "val_step": [], "val_loss": [], "lr": [], "seconds": 0.0}
    if resume and last.is_file():
        c = ckpt.load(last, ModelConfig, kind=kind.value)
        if c.extra.get("recipe") != dataclasses.asdict(recipe) or c.config != cfg:
            raise TrainError(f"{last} was written with another recipe or config; pass --restart to start over "
                             "or use the same options")
        # A video checkpoint holds only what trains; the frozen backbone came from --backbone.
        model.load_state_dict(c.model_state, strict=kind == Kind.T2I or not recipe.pretrained_backbone)
        opt.load_state_dict(c.extra["optimizer"])
        step, history = int(c.extra["step"]), c.extra["history"]
    if step == 0:
        history["val_step"].append(0)
        history["val_loss"].append(evaluate(model, val_clips, kind, cfg, tok, device, autocast, fixed_rate=fr))
    train_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def save(path: Path, resumable: bool) -> None:
        """The resume point carries the optimiser; the final file only what inference needs."""
        whole = kind == Kind.T2I or not recipe.pretrained_backbone
        state = model.state_dict() if whole else model.video_state()
        extra = {"step": step, "history": history, "recipe": dataclasses.asdict(recipe), "vocab": list(tok.vocab)}
        if resumable:
            extra["optimizer"] = opt.state_dict()
        ckpt.save(path, state, cfg, kind=kind.value, extra=extra)

    bar = Progress(recipe.steps, f"train {kind.value}", unit="step", enabled=show_progress and rank == 0)
    bar.n = step
    t0 = time.perf_counter() - history["seconds"]
    model.train()
    while step < recipe.steps:
        rng = np.random.default_rng([recipe.seed, step, rank])
        batch = make_batch(train_clips, kind, cfg, tok, rng, recipe.batch // world, recipe.text_dropout, fr)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        loss = _loss(train_model, batch, device, autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        step += 1
        history["step"].append(step)
        history["loss"].append(float(loss.detach()))
        history["lr"].append(lr_at(step - 1, recipe))
        if step % recipe.eval_every == 0 or step == recipe.steps:
            history["val_step"].append(step)
            history["val_loss"].append(evaluate(model, val_clips, kind, cfg, tok, device, autocast, fixed_rate=fr))
        history["seconds"] = time.perf_counter() - t0
        bar.update(loss=float(loss.detach()), lr=lr_at(step - 1, recipe))
        if rank == 0 and (step % recipe.ckpt_every == 0 or step == recipe.steps):
            save(last, resumable=True)
    bar.close()
    if rank == 0:
        save(final, resumable=False)
        (out / f"{kind.value}.history.json").write_text(json.dumps(history))
    if world > 1:
        dist.barrier()
    return final


def load_model(path: str | os.PathLike, backbone: str | os.PathLike | None = None) -> DualTransformer:
    """Rebuild a trained model from its checkpoint(s): a video model needs its backbone's too."""
    c = ckpt.load(path, ModelConfig)
    kind = Kind(c.kind)
    model = DualTransformer(c.config, kind)
    if kind == Kind.T2I:
        ckpt.load_model_state(model, c)
        return model.eval()
    if set(c.model_state) >= set(model.state_dict()):       # trained whole (the random-backbone ablation)
        model.load_state_dict(c.model_state, strict=True)
        return model.eval()
    b = ckpt.load(backbone or Path(path).parent / "t2i.safetensors", ModelConfig, kind="t2i")
    model.load_state_dict({**b.model_state, **c.model_state}, strict=True)
    return model.eval()
