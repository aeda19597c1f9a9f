"""Video files in and out: MP4, GIF and contact-sheet PNG, written atomically.

Every writer renders into a temporary file beside the target and renames it
over the target only when complete, so a failure never leaves a half-written
file. Frames are uint8 RGB (T, H, W, 3); OpenCV's BGR stays inside this module.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from hiergen import fileio

_MP4_FOURCC = "mp4v"   # MPEG-4 Part 2: the encoder every opencv-python wheel carries


class VideoError(RuntimeError):
    """A video that cannot be written or read; the message says why and what to do."""


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise VideoError(f"expected uint8 RGB frames (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    return frames


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return frames
    return np.repeat(np.repeat(frames, scale, axis=1), scale, axis=2)


def check_writable(path: str | os.PathLike) -> Path:
    """Raise VideoError unless a file can be created at `path`; call it before long work."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise VideoError(f"cannot write {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise VideoError(f"cannot write {path}: folder {parent} is not writable (choose another output path)")
    if path.is_dir():
        raise VideoError(f"cannot write {path}: it is a folder (give a file name)")
    return parent


@contextmanager
def atomic_path(path: str | os.PathLike):
    """fileio.atomic_path after checking the folder, with errors that say what to do."""
    check_writable(path)
    with fileio.atomic_path(path) as tmp:
        yield tmp


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float = 8.0, scale: int = 1) -> Path:
    """Write an MP4 (mpeg4 codec); `scale` enlarges tiny frames with nearest-neighbour for viewing."""
    frames = _upscale(_check_frames(frames), scale)
    _, h, w, _ = frames.shape
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*_MP4_FOURCC), float(fps), (w, h))
        if not writer.isOpened():
            raise VideoError(f"OpenCV could not open an MP4 writer for {path} ({w}x{h} at {fps} fps)")
        try:
            for f in frames:
                writer.write(np.ascontiguousarray(f[..., ::-1]))
        finally:
            writer.release()
        if os.path.getsize(tmp) == 0:
            raise VideoError(f"OpenCV wrote an empty MP4 for {path}")
    return Path(path)


def write_gif(frames: np.ndarray, path: str | os.PathLike, fps: float = 8.0, scale: int = 1) -> Path:
    """Write a looping animated GIF."""
    frames = _upscale(_check_frames(frames), scale)
    anim = cv2.Animation()
    anim.frames = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    anim.durations = [max(1, round(1000.0 / fps))] * len(frames)
    anim.loop_count = 0
    with atomic_path(path) as tmp:
        if not cv2.imwriteanimation(str(tmp), anim):
            raise VideoError(f"OpenCV could not write the GIF {path}")
    return Path(path)


def contact_sheet(frames: np.ndarray, caption: str = "", cols: int | None = None,
                  cell: int = 128, pad: int = 4) -> np.ndarray:
    """Frames in a grid under the caption, as one uint8 RGB image."""
    frames = _check_frames(frames)
    n, h, w, _ = frames.shape
    cols = cols or min(n, 8 if n > 9 else n)
    rows = math.ceil(n / cols)
    scale = max(1, cell // max(h, w))
    ch, cw = h * scale, w * scale
    font, fscale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    lines = _wrap(caption, font, fscale, thick, cols * (cw + pad)) if caption else []
    line_h = 22
    head = line_h * len(lines) + (8 if lines else 0)
    label_h = 14
    sheet = np.full((head + rows * (ch + label_h + pad) + pad, cols * (cw + pad) + pad, 3), 250, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(sheet, text, (pad + 2, 4 + line_h * (i + 1) - 6), font, fscale, (20, 20, 20), thick, cv2.LINE_AA)
    for i, f in enumerate(frames):
        r, c = divmod(i, cols)
        y = head + pad + r * (ch + label_h + pad)
        x = pad + c * (cw + pad)
        cv2.putText(sheet, str(i + 1), (x, y + label_h - 3), font, 0.38, (90, 90, 90), 1, cv2.LINE_AA)
        sheet[y + label_h:y + label_h + ch, x:x + cw] = _upscale(f[None], scale)[0]
    return sheet


def _wrap(text: str, font, fscale, thick, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}".strip()
        if cur and cv2.getTextSize(trial, font, fscale, thick)[0][0] > width - 8:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    return lines + ([cur] if cur else [])


def write_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write one uint8 RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(image[..., ::-1])):
            raise VideoError(f"OpenCV could not write the PNG {path}")
    return Path(path)


def write_sheet(frames: np.ndarray, path: str | os.PathLike, caption: str = "", cols: int | None = None) -> Path:
    return write_png(contact_sheet(frames, caption, cols), path)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3)."""
    if not Path(path).is_file():
        raise VideoError(f"image {path} does not exist or is not a file (check the path)")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise VideoError(f"cannot decode image {path}: is it a PNG/JPEG file?")
    return img[..., ::-1].copy()


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Read a video file as (uint8 RGB frames (T, H, W, 3), fps). Raises VideoError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {path} does not exist")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"cannot open video {path}: not a video file OpenCV/FFmpeg can decode")
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
        frames = []
        while max_frames is None or len(frames) < max_frames:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., ::-1])
    finally:
        cap.release()
    if not frames:
        raise VideoError(f"video {path} has no decodable frames (corrupt or empty file)")
    if not 0 < fps < 1000:
        raise VideoError(f"video {path} reports no usable frame rate ({fps})")
    return np.stack(frames), fps


def save_video(frames: np.ndarray, path: str | os.PathLike, fps: float, caption: str = "", scale: int = 1) -> Path:
    """Write by extension: .mp4, .gif or .png (contact sheet)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(frames, path, fps, scale)
    if suffix == ".gif":
        return write_gif(frames, path, fps, scale)
    if suffix == ".png":
        return write_sheet(frames, path, caption)
    raise VideoError(f"unknown video format {suffix!r} for {path}: use .mp4, .gif or .png (contact sheet)")
