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
from hiergen.training.sequences import TokenClip
from hiergen.training.train_transformer import Recipe, train


def default_config(image_vocab: int = 512, grid: int = 8) -> ModelConfig:
    tok = TextTokenizer.default()
    return ModelConfig(text_vocab=len(tok.vocab), image_vocab=image_vocab, text_len=tok.prefix_len, grid=grid,
                       d_model=128, n_layer=4, n_head=4, window=grid // 2)


RECIPES = {
    Kind.T2I: Recipe(steps=3000, batch=32, lr=2e-3, warmup=100),
    # 20% text-free samples: enough unconditional training for guidance at generation.
    Kind.KEYFRAME: Recipe(steps=2000, batch=16, lr=1e-3, warmup=100, text_dropout=0.2),
    Kind.INTERP: Recipe(steps=2000, batch=16, lr=1e-3, warmup=100),
}


def token_clips(shard) -> list[TokenClip]:
    """TokenClips of one split of `hiergen tokenize` shards."""
    return [TokenClip(str(shard.captions[i]), shard.clip(i).astype("int64")) for i in range(len(shard))]


def plot_history(history: dict, path: Path, title: str) -> Path:
    series = {"train loss": (history["step"], history["loss"])}
    if history.get("val_step"):
        series["validation loss"] = (history["val_step"], history["val_loss"])
    return line_plot(series, path, title, "step", "cross-entropy (nats per image token)", logy=True)


def train_models(tokens_dir: str, out: str, models: list[Kind], steps: int | None = None,
                 batch: int | None = None, lr: float | None = None, seed: int = 0,
                 restart: bool = False, backbone: str | None = None, fixed_rate: int | None = None,
                 text_dropout: float | None = None, random_backbone: bool = False,
                 init: str | None = None) -> list[Path]:
    """Train `models` into `out`; the video models sit on `backbone` (default <out>/t2i.safetensors)."""
    from hiergen.training.tokenize import open_tokens

    shards = open_tokens(tokens_dir)
    grid = int(shards["train"].tokens.shape[-1])
    cfg = default_config(grid=grid)
    train_clips, val_clips = token_clips(shards["train"]), token_clips(shards["val"])
    out_dir = Path(out)
    done = []
    for kind in models:
        overrides = {k: v for k, v in (("steps", steps), ("batch", batch), ("lr", lr), ("fixed_rate", fixed_rate),
                                       ("text_dropout", text_dropout), ("init_from", init)) if v is not None}
        if random_backbone:
            overrides["pretrained_backbone"] = False
        recipe = dataclasses.replace(RECIPES[kind], seed=seed, **overrides)
        base = None if kind == Kind.T2I or random_backbone else Path(backbone) if backbone else out_dir / "t2i.safetensors"
        path = train(kind, cfg, train_clips, val_clips, out_dir, recipe, backbone=base, resume=not restart)
        from hiergen.training import checkpoint as ckpt
        history = ckpt.load(path).extra["history"]
        plot_history(history, out_dir / f"{kind.value}.loss.png",
                     f"{kind.value}: {recipe.steps} steps, batch {recipe.batch}, {history['seconds'] / 60:.0f} min")
        print(f"wrote {path} ({history['seconds'] / 60:.1f} min); loss curve {out_dir / f'{kind.value}.loss.png'}")
        done.append(path)
    return done
