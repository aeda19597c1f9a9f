"""The default model's architecture and training recipes, and `hiergen train t2i|keyframe|interp|all`.

One command reproduces the shipped transformer checkpoints from token shards:
    hiergen train all --tokens data/tokens --out checkpoints/transformer
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from hiergen.config import Kind, ModelConfig
from hiergen.plots import line_plot
from hiergen.tokenizer import TextTokenizer
from hiergen.training import checkpoint as ckpt
from hiergen.training.motion_probe import MotionProbe
from hiergen.training.sequences import token_clips
from hiergen.training.train_transformer import Recipe, train


def default_config(image_vocab: int = 512, grid: int = 8) -> ModelConfig:
    tok = TextTokenizer.default()
    return ModelConfig(text_vocab=len(tok.vocab), image_vocab=image_vocab, text_len=tok.prefix_len, grid=grid,
                       d_model=128, n_layer=4, n_head=4, window=grid // 2)


# The video models train every weight, starting from the backbone, on a warm-up/stable/decay schedule made
# for runs that continue over several sessions (docs/training.md, "Learning motion"): at this scale the frozen
# backbone of CogVideo's recipe left attention-plus alone to learn motion, and it barely did. The
# CogVideo-faithful recipe stays as FROZEN_VIDEO (the ablation row).
RECIPES = {
    Kind.T2I: Recipe(steps=3000, batch=32, lr=2e-3, warmup=100),
    Kind.KEYFRAME: Recipe(steps=8000, batch=32, lr=1e-3, warmup=200, weights="all", schedule="wsd",
                          probe_every=250),
    Kind.INTERP: Recipe(steps=8000, batch=32, lr=1e-3, warmup=200, weights="all", schedule="wsd",
                        probe_every=250),
}
# CogVideo's own recipe at this scale: only attention-plus, its gates and the temporal table train.
FROZEN_VIDEO = {
    # 20% text-free samples: enough unconditional training for guidance at generation.
    Kind.KEYFRAME: Recipe(steps=2000, batch=16, lr=1e-3, warmup=100, text_dropout=0.2),
    Kind.INTERP: Recipe(steps=2000, batch=16, lr=1e-3, warmup=100),
}


def plot_history(history: dict, path: Path, title: str) -> Path:
    series = {"train loss": (history["step"], history["loss"])}
    if history.get("val_step"):
        series["validation loss"] = (history["val_step"], history["val_loss"])
    return line_plot(series, path, title, "step", "cross-entropy (nats per image token)", logy=True)


def plot_motion(history: dict, path: Path, title: str) -> Path | None:
    """Motion probe accuracy against training minutes (None when the run made no probe)."""
    rows = history.get("probe") or []
    if not rows:
        return None
    minutes = [r["minutes"] for r in rows]
    series = {k: (minutes, [r[k] for r in rows]) for k in ("motion", "two_phase_motion", "colour", "shape")}
    return line_plot(series, path, title, "training minutes", "accuracy on the probe's validation prompts",
                     ylim=(0.0, 1.0))


def train_models(tokens_dir: str, out: str, models: list[Kind], overrides: dict | None = None, seed: int = 0,
                 restart: bool = False, backbone: str | None = None, frozen: bool = False,
                 vqvae: str = "checkpoints/vqvae/final.safetensors") -> list[Path]:
    """Train `models` into `out`; the video models sit on `backbone` (default <out>/t2i.safetensors).

    overrides: Recipe fields to change (None values are ignored); frozen: the video models on CogVideo's
    frozen-backbone recipe (FROZEN_VIDEO); vqvae: the tokenizer the motion probe decodes with.
    """
    from hiergen.training.tokenize import open_tokens

    shards = open_tokens(tokens_dir)
    grid = int(shards["train"].tokens.shape[-1])
    cfg = default_config(grid=grid)
    train_clips, val_clips = token_clips(shards["train"]), token_clips(shards["val"])
    out_dir = Path(out)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    done = []
    for kind in models:
        base_recipe = FROZEN_VIDEO[kind] if frozen and kind in FROZEN_VIDEO else RECIPES[kind]
        recipe = dataclasses.replace(base_recipe, seed=seed, **given)
        random_backbone = not recipe.pretrained_backbone
        base = None if kind == Kind.T2I or random_backbone else Path(backbone) if backbone else out_dir / "t2i.safetensors"
        probe = None
        if kind != Kind.T2I and recipe.probe_every:
            probe = MotionProbe.build(val_clips, kind, vqvae, n=recipe.probe_prompts)
        path = train(kind, cfg, train_clips, val_clips, out_dir, recipe, backbone=base, resume=not restart,
                     probe=probe)
        curves = plot_run(path, out_dir / kind.value)          # titled with the run's steps and minutes
        print(f"wrote {path}; curves {', '.join(map(str, curves))}")
        done.append(path)
    return done


def plot_run(checkpoint: str | Path, out_stem: str | Path) -> list[Path]:
    """Loss and motion curves of a run so far, from any of its checkpoints (resume points included):
    <out_stem>.loss.png and <out_stem>.motion.png."""
    c = ckpt.load(checkpoint)
    history, recipe = c.extra["history"], c.extra.get("recipe", {})
    stem = Path(out_stem)
    title = f"{c.kind}: step {c.extra.get('step', len(history['step']))}, batch {recipe.get('batch', '?')}, " \
            f"{history['seconds'] / 60:.0f} min"
    written = [plot_history(history, stem.with_suffix(".loss.png"), title)]
    motion = plot_motion(history, stem.with_suffix(".motion.png"), f"{c.kind}: motion probe (sampled videos of "
                         f"{recipe.get('probe_prompts', '?')} validation prompts) against training minutes")
    return written + ([motion] if motion else [])


def probe_table(checkpoint: str | Path) -> str:
    """The run's motion probes so far as a markdown table (step, samples, minutes, accuracies in %)."""
    rows = ckpt.load(checkpoint).extra["history"].get("probe") or []
    lines = ["| step | samples | training minutes | motion | two-phase motion | colour | shape | size |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['samples']:,} | {r['minutes']:.0f} | "
                     + " | ".join(f"{100 * r[k]:.1f}" for k in ("motion", "two_phase_motion", "colour", "shape", "size"))
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":      # python -m hiergen.training.recipes CKPT OUT_STEM: plot a run, finished or not
    import sys
    for p in plot_run(sys.argv[1], sys.argv[2]):
        print(f"wrote {p}")
    print(probe_table(sys.argv[1]))
