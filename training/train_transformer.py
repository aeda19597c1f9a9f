"""Train the backbone (t2i) and the two video models (keyframe, interp) on token shards.

Order: the backbone first, on single frames with their captions; then each
video model on top of it: attention-plus initialised from the backbone's
attention, and either only the new weights trained on the frozen backbone
(CogVideo's recipe, `weights="video"`) or every weight (`weights="all"`,
which learns motion far faster at this scale: docs/training.md). AdamW with
warm-up and a cosine or warm-up/stable/decay schedule, gradient clipping,
bf16 autocast on CUDA. Every batch is drawn from a generator seeded by
(seed, step, rank), so a run resumed from its last checkpoint continues
exactly as if it had never stopped; resume points are written every
`ckpt_every` steps and every `ckpt_minutes`. A video model's run can probe
motion every `probe_every` steps (training/motion_probe.py), logged in the
history beside the losses. Under torchrun the same code runs
DistributedDataParallel (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from hiergen.config import Kind, ModelConfig
from hiergen.errors import HiergenError
from hiergen.progress import Progress
from hiergen.rates import RATES
from hiergen.tokenizer import TextTokenizer
from hiergen.training import checkpoint as ckpt
from hiergen.training.model import DualTransformer
from hiergen.training.schedule import warmup_cosine, warmup_stable_decay, wsd_decay_start
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
    weights: str = "video"            # video models: "video" trains attention-plus, gates and the temporal
                                      # table on the frozen backbone (CogVideo); "all" trains every weight
    backbone_lr: float = 1.0          # weights="all": the backbone weights' learning rate, as a share of lr
    schedule: str = "cosine"          # "cosine" to min_lr_frac, or "wsd": held, then linear over decay_frac
    decay_frac: float = 0.2
    seed: int = 0
    # What a resumed run may change (OPERATIONAL): when it checkpoints, evaluates, probes, and how long it runs.
    ckpt_every: int = 200
    ckpt_minutes: float = 5.0
    eval_every: int = 200
    probe_every: int = 0              # steps between motion probes of a video model (0: none)
    probe_prompts: int = 32


OPERATIONAL = ("steps", "ckpt_every", "ckpt_minutes", "eval_every", "probe_every", "probe_prompts")
WEIGHTS = ("video", "all")
SCHEDULES = ("cosine", "wsd")


class TrainingStopped(KeyboardInterrupt):
    """SIGTERM or SIGINT asked the run to stop: it wrote a resume point first, and the same command continues
    it. The CLI prints the message and exits with status 130, as for any interrupt."""


class _StopRequest:
    """SIGTERM (or SIGINT) during training: finish the step, write a resume point, stop. A session that must
    end sends SIGTERM and commits the resume point instead of losing the minutes since the last one."""

    def __init__(self):
        self.asked = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, signum, frame):
        self.asked = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


class TrainError(HiergenError, ValueError):
    """A training set-up that cannot work; the message names the fix."""


def lr_at(step: int, r: Recipe) -> float:
    if r.schedule == "wsd":
        return warmup_stable_decay(step, r.lr, r.warmup, r.steps, r.min_lr_frac, r.decay_frac)
    return warmup_cosine(step, r.lr, r.warmup, r.steps, r.min_lr_frac)


def trains_whole(kind: Kind, r: Recipe) -> bool:
    """Whether every weight trains (and so the checkpoint holds the whole model, not only the video part)."""
    return kind == Kind.T2I or not r.pretrained_backbone or r.weights == "all"


def same_run(saved: dict | None, r: Recipe) -> bool:
    """A resume point continues this recipe when everything but the OPERATIONAL fields agrees."""
    if saved is None:
        return False
    now = dataclasses.asdict(r)
    return all(saved.get(k, now[k]) == v for k, v in now.items() if k not in OPERATIONAL)


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
    if recipe.weights not in WEIGHTS:
        problems.append(f"weights {recipe.weights!r}: choose one of {', '.join(WEIGHTS)}")
    if recipe.schedule not in SCHEDULES:
        problems.append(f"schedule {recipe.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if not 0 < recipe.backbone_lr <= 1 or not 0 <= recipe.decay_frac <= 1:
        problems.append("backbone_lr must lie in (0, 1] and decay_frac in [0, 1]")
    if recipe.ckpt_every < 1 or recipe.ckpt_minutes <= 0 or recipe.probe_every < 0:
        problems.append("ckpt_every and ckpt_minutes must be positive, probe_every 0 (off) or positive")
    for c in clips[:50]:
        n_words = len(c.caption.split())
        if n_words > tok.max_words:
            problems.append(f"caption {c.caption!r} has {n_words} words, the model reads {tok.max_words}")
            break
    if problems:
        raise TrainError(f"cannot train {kind.value}: " + "; ".join(problems))


def build_model(kind: Kind, cfg: ModelConfig, backbone: str | os.PathLike | None,
                pretrained: bool = True, freeze: bool = True) -> DualTransformer:
    """A model ready to train: a video model on the trained backbone (frozen unless `freeze` is False)."""
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
    if freeze:
        model.freeze_backbone()
    return model


def param_groups(model: DualTransformer, recipe: Recipe) -> list[dict]:
    """AdamW groups: weight decay on matrices only; backbone weights at backbone_lr of the rate when they train."""
    groups = []
    for backbone in (False, True):
        for decay in (True, False):
            ps = [p for n, p in model.named_parameters()
                  if p.requires_grad and (p.dim() >= 2) == decay
                  and (model.kind != Kind.T2I and model.is_backbone(n)) == backbone]
            if ps:
                groups.append({"params": ps, "weight_decay": recipe.weight_decay if decay else 0.0,
                               "lr_scale": recipe.backbone_lr if backbone else 1.0})
    return groups


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
          resume: bool = True, tok: TextTokenizer | None = None, show_progress: bool = True,
          probe=None) -> Path:
    """Train one model; checkpoints `<out>/<kind>.last.safetensors`, final `<out>/<kind>.safetensors`.

    `probe`: a MotionProbe run every recipe.probe_every steps (and at the start and end)."""
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
    whole = trains_whole(kind, recipe)
    model = build_model(kind, cfg, backbone, recipe.pretrained_backbone, freeze=not whole).to(device)
    # A frozen-backbone checkpoint holds only what trains: it records which backbone completes it (load_model checks).
    backbone_sha = None if whole else ckpt.model_digest(ckpt.load(backbone, ModelConfig, kind="t2i").model_state)
    if recipe.init_from:
        warm = ckpt.load(recipe.init_from, ModelConfig, kind=kind.value)
        if warm.config != cfg:
            raise TrainError(f"--init {recipe.init_from} was trained with {warm.config}, not {cfg}")
        model.load_state_dict(warm.model_state, strict=whole)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(model, recipe), lr=recipe.lr, betas=(0.9, 0.95))
    step, history = 0, {"step": [], "loss": [], "val_step": [], "val_loss": [], "lr": [], "seconds": 0.0,
                        "probe_seconds": 0.0, "probe": []}
    if resume and last.is_file():
        c = ckpt.load(last, ModelConfig, kind=kind.value)
        if not same_run(c.extra.get("recipe"), recipe) or c.config != cfg:
            raise TrainError(f"{last} was written with another recipe or config; pass --restart to start over "
                             f"or use the same options (only {', '.join(OPERATIONAL)} may change on resume)")
        # A video checkpoint trained on the frozen backbone holds only what trains; the backbone came from --backbone.
        model.load_state_dict(c.model_state, strict=whole)
        opt.load_state_dict(c.extra["optimizer"])
        for g in opt.param_groups:           # an older resume point's groups carry no scale
            g.setdefault("lr_scale", 1.0)
        step, history = int(c.extra["step"]), c.extra["history"]
        history.setdefault("probe", [])
        history.setdefault("probe_seconds", 0.0)
    if step == 0:
        history["val_step"].append(0)
        history["val_loss"].append(evaluate(model, val_clips, kind, cfg, tok, device, autocast, fixed_rate=fr))
    train_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def run_probe() -> None:
        """Motion of sampled videos now, logged against training minutes (probe time excluded)."""
        if probe is None or rank != 0 or (history["probe"] and history["probe"][-1]["step"] == step):
            return
        t = time.perf_counter()
        result = probe.run(model)
        history["probe_seconds"] += time.perf_counter() - t
        minutes = (time.perf_counter() - t0 - history["probe_seconds"]) / 60
        history["probe"].append({"step": step, "minutes": minutes, "samples": step * recipe.batch, **result})
        if show_progress:
            print(f"\n[probe] {kind.value} step {step} ({minutes:.1f} training min): motion {result['motion']:.1%}, "
                  f"colour {result['colour']:.1%}, shape {result['shape']:.1%}", flush=True)

    def save(path: Path, resumable: bool) -> None:
        """The resume point carries the optimiser; the final file only what inference needs."""
        state = model.state_dict() if whole else model.video_state()
        extra = {"step": step, "history": history, "recipe": dataclasses.asdict(recipe), "vocab": list(tok.vocab)}
        if backbone_sha:
            extra["backbone_sha256"] = backbone_sha
        if resumable:
            extra["optimizer"] = opt.state_dict()
        ckpt.save(path, state, cfg, kind=kind.value, extra=extra)

    bar = Progress(recipe.steps, f"train {kind.value}", unit="step", enabled=show_progress and rank == 0, start=step)
    # A WSD run keeps its resume point from the end of the stable phase: a later session can raise --steps
    # on a copy of it and train on at the peak rate, instead of from a decayed model.
    stable = out / f"{kind.value}.stable.safetensors"
    stable_step = wsd_decay_start(recipe.steps, recipe.decay_frac) if recipe.schedule == "wsd" else -1
    t0 = time.perf_counter() - history["seconds"]
    if step == 0:
        run_probe()
    last_save = time.perf_counter()
    model.train()
    with _StopRequest() as stop:
        while step < recipe.steps:
            rng = np.random.default_rng([recipe.seed, step, rank])
            batch = make_batch(train_clips, kind, cfg, tok, rng, recipe.batch // world, recipe.text_dropout, fr)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, recipe) * g["lr_scale"]
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
            if recipe.probe_every and (step % recipe.probe_every == 0 or step == recipe.steps):
                run_probe()
            history["seconds"] = time.perf_counter() - t0
            bar.update(loss=float(loss.detach()), lr=lr_at(step - 1, recipe))
            due = step % recipe.ckpt_every == 0 or time.perf_counter() - last_save >= 60 * recipe.ckpt_minutes
            if rank == 0 and (due or step == recipe.steps or stop.asked):
                save(last, resumable=True)
                last_save = time.perf_counter()
            if rank == 0 and step == stable_step:
                save(stable, resumable=True)
            if stop.asked:
                bar.close()
                raise TrainingStopped(f"stopped at step {step} of {recipe.steps}; resume point {last}: run the same "
                                      "command to continue")
    bar.close()
    if rank == 0:
        save(final, resumable=False)
        (out / f"{kind.value}.history.json").write_text(json.dumps(history))
    if world > 1:
        dist.barrier()
    return final
