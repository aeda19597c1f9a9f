"""Clip datasets on disk: the synthetic dataset writer, the reader, and the real-video loader.

Format (version 1) of a dataset folder:
    dataset.json     {"format": "hiergen-clips", "version": 1, "n": N, "size": 64,
                      "fps": 16, "textured": false, "source": "synth" | "video"}
    index.jsonl      one JSON object per clip: {"id", "file", "caption", "fps",
                      "n_frames", "duration_s", "split", "seed", "held_out"}
    clips/<id>.npz   key "frames": (T, H, W, 3) uint8 RGB at `fps`
Clips are stored losslessly (compressed NumPy), so training never sees codec
artefacts; `hiergen synth --caption` writes viewable MP4 previews instead.
A dataset is written into a temporary folder and renamed at the end, so an
interrupted run leaves nothing that looks like a dataset.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from hiergen.captions import CaptionError, parse
from hiergen.clip import Clip
from hiergen.errors import HiergenError
from hiergen.fileio import temp_dir_beside
from hiergen.progress import progress
from hiergen.rates import NATIVE_FPS
from hiergen.synth import caption_for, check_size, render, split_of

FORMAT, VERSION = "hiergen-clips", 1


class DatasetError(HiergenError, ValueError):
    """A dataset folder that cannot be read or written; the message says what to do."""


@dataclass(frozen=True)
class ClipRecord:
    id: str
    file: str
    caption: str
    fps: float
    n_frames: int
    duration_s: float
    split: str
    seed: int | None
    held_out: bool


@dataclass
class Dataset:
    root: Path
    meta: dict
    records: list[ClipRecord]

    def __len__(self) -> int:
        return len(self.records)

    def load(self, record: ClipRecord) -> Clip:
        path = self.root / record.file
        try:
            with np.load(path) as z:
                frames = z["frames"]
        except (OSError, KeyError, ValueError) as e:
            raise DatasetError(f"clip {path} is unreadable ({e}); re-create the dataset with `hiergen synth`") from e
        return Clip(frames=frames, fps=record.fps, caption=record.caption)

    def iter_clips(self, split: str | None = None) -> Iterator[tuple[ClipRecord, Clip]]:
        for rec in self.records:
            if split is None or rec.split == split:
                yield rec, self.load(rec)


def _prepare_out(out: Path, force: bool) -> Path:
    """Check `out` can be (re)created; return a temporary sibling folder to fill."""
    if out.exists():
        if not force:
            raise DatasetError(f"{out} already exists; choose another --out or pass --force to replace it")
        if not (out / "dataset.json").is_file():
            raise DatasetError(f"{out} exists and is not a hiergen dataset; refusing to replace it even with --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    return temp_dir_beside(out)


def _commit(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_dataset(out: str | os.PathLike, clips: Iterable[tuple[ClipRecord, Clip]], meta: dict,
                  force: bool = False) -> Dataset:
    """Write (record, clip) pairs as a dataset folder, atomically."""
    out = Path(out)
    tmp = _prepare_out(out, force)
    records = []
    try:
        (tmp / "clips").mkdir()
        for rec, clip in clips:
            np.savez_compressed(tmp / rec.file, frames=clip.frames)
            records.append(rec)
        if not records:
            raise DatasetError("no clips to write: every input was skipped")
        meta = {"format": FORMAT, "version": VERSION, **meta, "n": len(records)}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        with open(tmp / "index.jsonl", "w") as f:
            for rec in records:
                f.write(json.dumps(asdict(rec)) + "\n")
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Dataset(out, meta, records)


def synth_records(n: int, size: int = 64, textured: bool = False, start_seed: int = 0,
                  show_progress: bool = True) -> Iterator[tuple[ClipRecord, Clip]]:
    """Render n clips with seeds start_seed .. start_seed + n - 1 (splits and captions by seed)."""
    for seed in progress(range(start_seed, start_seed + n), "render", unit="clip", enabled=show_progress):
        cap = caption_for(seed)
        clip = render(cap, seed=seed, size=size, textured=textured)
        cid = f"{seed:06d}"
        yield ClipRecord(id=cid, file=f"clips/{cid}.npz", caption=cap.text, fps=clip.fps,
                         n_frames=clip.n_frames, duration_s=round(clip.duration_s, 4),
                         split=split_of(seed), seed=seed, held_out=cap.held_out), clip


def write_synth_dataset(out: str | os.PathLike, n: int, size: int = 64, textured: bool = False,
                        start_seed: int = 0, force: bool = False, show_progress: bool = True) -> Dataset:
    if n < 1:
        raise DatasetError(f"--n must be at least 1, got {n}")
    check_size(size)
    meta = {"size": size, "fps": NATIVE_FPS, "textured": textured, "source": "synth", "start_seed": start_seed}
    return write_dataset(out, synth_records(n, size, textured, start_seed, show_progress), meta, force)


def open_dataset(path: str | os.PathLike) -> Dataset:
    root = Path(path)
    meta_path, index_path = root / "dataset.json", root / "index.jsonl"
    if not meta_path.is_file() or not index_path.is_file():
        raise DatasetError(f"{root} is not a hiergen dataset (no dataset.json/index.jsonl); "
                           "create one with `hiergen synth --n N --out DIR` or `hiergen import-videos`")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DatasetError(f"{root}: format {meta.get('format')!r} version {meta.get('version')!r} is not "
                           f"{FORMAT!r} version {VERSION}; re-create it with this hiergen")
    records = [ClipRecord(**json.loads(line)) for line in index_path.read_text().splitlines() if line.strip()]
    return Dataset(root, meta, records)


# ---------------------------------------------------------------- real videos
def conform(frames: np.ndarray, fps: float, size: int) -> np.ndarray:
    """Centre-crop to square, resize to size x size, resample in time to the native 16 fps."""
    t, h, w, _ = frames.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    frames = frames[:, y0:y0 + side, x0:x0 + side]
    n_out = max(1, int(round((t - 1) * NATIVE_FPS / fps)) + 1)
    idx = np.minimum(np.round(np.arange(n_out) * fps / NATIVE_FPS).astype(int), t - 1)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(frames[i], (size, size), interpolation=interp) for i in idx])


def video_records(folder: str | os.PathLike, index_jsonl: str | os.PathLike, size: int = 64,
                  strict_captions: bool = False) -> Iterator[tuple[ClipRecord, Clip]]:
    """Read `{path, caption}` lines (paths relative to `folder`) into clips at the native rate.

    Unreadable or corrupt videos are skipped with a warning that names them, so
    one bad file never ends a long import.
    """
    from hiergen.video import VideoError, read_video

    folder, index_jsonl = Path(folder), Path(index_jsonl)
    if not folder.is_dir():
        raise DatasetError(f"video folder {folder} does not exist")
    if not index_jsonl.is_file():
        raise DatasetError(f"caption file {index_jsonl} does not exist; write one JSON line per video: "
                           '{"path": "clip.mp4", "caption": "a small red circle moves left quickly"}')
    lines = [ln for ln in index_jsonl.read_text().splitlines() if ln.strip()]
    for i, line in enumerate(progress(lines, "import", unit="video")):
        try:
            entry = json.loads(line)
            path, caption = entry["path"], entry["caption"]
        except (json.JSONDecodeError, KeyError, TypeError):
            warnings.warn(f"{index_jsonl}:{i + 1}: skipped, expected {{\"path\": ..., \"caption\": ...}}")
            continue
        if strict_captions:
            try:
                caption = parse(caption).text
            except CaptionError as e:
                warnings.warn(f"{index_jsonl}:{i + 1}: skipped {path}: {e}")
                continue
        try:
            frames, fps = read_video(folder / path)
        except VideoError as e:
            warnings.warn(f"skipped unreadable video: {e}")
            continue
        frames = conform(frames, fps, size)
        cid = f"{i:06d}"
        clip = Clip(frames=frames, fps=float(NATIVE_FPS), caption=caption)
        yield ClipRecord(id=cid, file=f"clips/{cid}.npz", caption=caption, fps=clip.fps,
                         n_frames=clip.n_frames, duration_s=round(clip.duration_s, 4),
                         split=split_of(i), seed=None, held_out=False), clip


def write_video_dataset(folder, index_jsonl, out, size: int = 64, force: bool = False,
                        strict_captions: bool = False) -> Dataset:
    check_size(size)
    meta = {"size": size, "fps": NATIVE_FPS, "textured": None, "source": "video"}
    return write_dataset(out, video_records(folder, index_jsonl, size, strict_captions), meta, force)
