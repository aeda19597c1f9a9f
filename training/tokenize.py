"""Encode a clip dataset into token shards once, so transformer training never touches pixels.

    from hiergen.training.tokenize import tokenize_dataset, open_tokens
    tokenize_dataset("data/synth", "checkpoints/vqvae/final.safetensors", "data/tokens")
    shards = open_tokens("data/tokens")          # {"train": TokenShard, "val": ..., "test": ...}
    shards["train"].clip(0)                      # (T, 8, 8) int16 tokens of the first train clip

Layout of `out_dir` (format "hiergen-tokens", version 1):
    tokens.json     key, tokenizer and dataset it came from, per-split file + SHA-256
    <split>.npz     tokens    (n_frames_total, h, w) int16, every clip's frames back to back
                    offsets   (n_clips + 1,) int64: clip i is tokens[offsets[i]:offsets[i + 1]]
                    ids, captions (n_clips,) str; fps (n_clips,) float32;
                    seeds (n_clips,) int64 (-1 for clips without a seed); held_out (n_clips,) bool

The cache key is the SHA-256 of the tokenizer checkpoint file together with
the dataset's dataset.json and index.jsonl (and this format's version). A
re-run with the same key and intact shards (their hashes are checked, not
just their existence) reuses them; any other key rebuilds them.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hiergen.errors import HiergenError
from hiergen.fileio import atomic_path, hash_file, write_json
from hiergen.progress import Progress
from hiergen.synth import SPLITS

FORMAT, VERSION = "hiergen-tokens", 1
MANIFEST = "tokens.json"


class TokensError(HiergenError, ValueError):
    """Token shards that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class TokenShard:
    split: str
    tokens: np.ndarray      # (n_frames_total, h, w) int16
    offsets: np.ndarray     # (n_clips + 1,) int64
    ids: np.ndarray         # (n_clips,) str
    captions: np.ndarray    # (n_clips,) str
    fps: np.ndarray         # (n_clips,) float32
    seeds: np.ndarray       # (n_clips,) int64, -1 where the clip has no seed
    held_out: np.ndarray    # (n_clips,) bool
    n_frames: np.ndarray | None = None   # keyframes-only shards: each clip's native length (5 tokens each)

    def __len__(self) -> int:
        return len(self.captions)

    def clip(self, i: int) -> np.ndarray:
        """Tokens (T, h, w) int16 of clip i."""
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


def cache_key(dataset_dir: str | os.PathLike, vqvae_checkpoint: str | os.PathLike,
              keyframes_only: bool = False) -> str:
    """SHA-256 over (format version, tokenizer checkpoint bytes, dataset.json, index.jsonl[, keyframes only])."""
    root = Path(dataset_dir)
    h = hashlib.sha256(f"{FORMAT}/{VERSION}\n".encode() + (b"keyframes-only\n" if keyframes_only else b""))
    for part in (Path(vqvae_checkpoint), root / "dataset.json", root / "index.jsonl"):
        h.update(f"{part.name}\n".encode())
        hash_file(part, h)
    return h.hexdigest()


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _shards_intact(out: Path, manifest: dict) -> bool:
    for entry in manifest.get("splits", {}).values():
        path = out / entry["file"]
        if not path.is_file() or hash_file(path).hexdigest() != entry["sha256"]:
            return False
    return bool(manifest.get("splits"))


def _atomic_savez(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


@torch.no_grad()
def tokenize_dataset(dataset_dir: str | os.PathLike, vqvae_checkpoint: str | os.PathLike,
                     out_dir: str | os.PathLike, batch: int = 32, show_progress: bool = True,
                     threads: int | None = None, jobs: int = 1, keyframes_only: bool = False) -> dict:
    """Encode every clip of the dataset into per-split token shards; returns the manifest.

    Reuses existing shards only when their cache key matches and their hashes check out.
    Encoding runs in fp32 (tokens must match the exported encoder); `threads` sets
    torch's CPU threads (1 is fastest on a machine shared with other jobs); `jobs` > 1 encodes in that
    many worker processes of one thread each (on 2 cores, 2 jobs encoded about twice as fast as 2 threads).
    keyframes_only: encode only each clip's five keyframes (what keyframe training reads: 5 of ~60 frames),
    with its length kept in `n_frames`; such shards serve the keyframe model and the backbone, not the
    interpolation model or a fixed-rate baseline.
    """
    from hiergen.data import open_dataset
    from hiergen.training.vqvae import load_vqvae

    out = Path(out_dir)
    ds = open_dataset(dataset_dir)
    if not Path(vqvae_checkpoint).is_file():
        raise TokensError(f"tokenizer checkpoint {vqvae_checkpoint} does not exist; train one with "
                          f"`hiergen train vqvae` or pass the path of its final.safetensors")
    key = cache_key(dataset_dir, vqvae_checkpoint, keyframes_only)
    old = _read_manifest(out)
    if old is not None and old.get("format") == FORMAT and old.get("version") == VERSION \
            and old.get("key") == key and _shards_intact(out, old):
        if show_progress:
            print(f"tokens in {out} are current (key {key[:12]}); reusing them")
        return old

    if threads:
        torch.set_num_threads(threads)
    model = load_vqvae(vqvae_checkpoint, device="cuda" if torch.cuda.is_available() else "cpu")
    device = next(model.parameters()).device
    cfg = model.cfg
    if ds.meta.get("size") != cfg.image_size:
        raise TokensError(f"dataset {dataset_dir} holds {ds.meta.get('size')}px frames, the tokenizer "
                          f"expects {cfg.image_size}px; re-create the dataset with --size {cfg.image_size}")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)     # shards in flux: no manifest may vouch for them
    splits = {}
    n_total = sum(5 if keyframes_only else r.n_frames for r in ds.records)
    bar = Progress(n_total, "tokenize", unit="frame", enabled=show_progress)
    pool = None
    if jobs > 1 and device.type == "cpu":
        # Small convolutions gain little from a second thread; whole processes, one thread each, scale.
        import multiprocessing as mp
        pool = mp.get_context("spawn").Pool(jobs, _worker_init, (str(dataset_dir), str(vqvae_checkpoint), batch,
                                                                 keyframes_only))
    try:
        for split in SPLITS:
            recs = [r for r in ds.records if r.split == split]
            if not recs:
                continue
            groups = [recs[i:i + _GROUP] for i in range(0, len(recs), _GROUP)]
            encoded = pool.imap(_encode_group, groups) if pool else (
                _encode_records(ds, model, g, batch, keyframes_only) for g in groups)
            chunks, offsets = [], [0]
            for toks_list in encoded:
                for toks in toks_list:
                    chunks.append(toks)
                    offsets.append(offsets[-1] + len(toks))
                    bar.update(len(toks))
            extra = {"n_frames": np.asarray([r.n_frames for r in recs], np.int64)} if keyframes_only else {}
            path = out / f"{split}.npz"
            _atomic_savez(path,
                          tokens=np.concatenate(chunks),
                          offsets=np.asarray(offsets, np.int64),
                          ids=np.asarray([r.id for r in recs]),
                          captions=np.asarray([r.caption for r in recs]),
                          fps=np.asarray([r.fps for r in recs], np.float32),
                          seeds=np.asarray([-1 if r.seed is None else r.seed for r in recs], np.int64),
                          held_out=np.asarray([r.held_out for r in recs], bool), **extra)
            splits[split] = {"file": path.name, "sha256": hash_file(path).hexdigest(),
                             "n_clips": len(recs), "n_frames": offsets[-1]}
    finally:
        if pool:
            pool.terminate()
    bar.close()
    manifest = {"format": FORMAT, "version": VERSION, "key": key,
                "vqvae": str(vqvae_checkpoint), "dataset": str(dataset_dir),
                "grid": cfg.grid, "n_codes": cfg.n_codes, "image_size": cfg.image_size,
                "fps": ds.meta.get("fps"), "keyframes_only": keyframes_only, "splits": splits}
    write_json(out / MANIFEST, manifest)
    return manifest


_GROUP = 16                     # clips per encoder call: batches of several short clips run faster
_WORKER: dict = {}


def _encode_records(ds, model, recs, batch: int, keyframes_only: bool = False) -> list[np.ndarray]:
    """Tokens (T, h, w) int16 of each record's clip (or of its five keyframes), encoded together in batches."""
    from hiergen.rates import sample_keyframes
    device = next(model.parameters()).device
    frames = [ds.load(r).frames for r in recs]                             # (T, H, W, 3) uint8 each
    if keyframes_only:
        frames = [f[sample_keyframes(len(f))[1]] for f in frames]
    every = np.concatenate(frames)
    with torch.no_grad():
        toks = torch.cat([model.encode(torch.from_numpy(every[i:i + batch]).to(device)).cpu()
                          for i in range(0, len(every), batch)]).numpy().astype(np.int16)
    return np.split(toks, np.cumsum([len(f) for f in frames])[:-1])


def _worker_init(dataset_dir: str, vqvae_checkpoint: str, batch: int, keyframes_only: bool = False) -> None:
    from hiergen.data import open_dataset
    from hiergen.training.vqvae import load_vqvae
    torch.set_num_threads(1)
    _WORKER.update(ds=open_dataset(dataset_dir), model=load_vqvae(vqvae_checkpoint), batch=batch,
                   keyframes_only=keyframes_only)


def _encode_group(recs) -> list[np.ndarray]:
    return _encode_records(_WORKER["ds"], _WORKER["model"], recs, _WORKER["batch"], _WORKER["keyframes_only"])


def open_tokens(out_dir: str | os.PathLike, verify: bool = True) -> dict[str, TokenShard]:
    """Read the token shards of `out_dir` ({split: TokenShard}), checking their hashes."""
    out = Path(out_dir)
    manifest = _read_manifest(out)
    if manifest is None or manifest.get("format") != FORMAT:
        raise TokensError(f"{out} holds no token shards ({MANIFEST} missing or unreadable); run "
                          f"`hiergen tokenize --data DATASET --vqvae CHECKPOINT --out {out}`")
    if manifest.get("version") != VERSION:
        raise TokensError(f"{out}: token format version {manifest.get('version')}, this hiergen reads "
                          f"{VERSION}; re-run `hiergen tokenize`")
    if verify and not _shards_intact(out, manifest):
        raise TokensError(f"token shards in {out} are missing or do not match their hashes; "
                          f"re-run `hiergen tokenize` to rebuild them")
    shards = {}
    for split, entry in manifest["splits"].items():
        with np.load(out / entry["file"]) as z:
            shards[split] = TokenShard(split=split, **{k: z[k] for k in
                                       ("tokens", "offsets", "ids", "captions", "fps", "seeds", "held_out")},
                                       n_frames=z["n_frames"] if "n_frames" in z.files else None)
    return shards
