"""Video files in and out: MP4, GIF and contact-sheet PNG, written atomically.

Every writer renders into a temporary file beside the target and renames it
over the target only when complete, so a failure never leaves a half-written
file. Frames are uint8 RGB (T, H, W, 3); OpenCV's BGR stays inside this module.

MP4s are H.264 (High profile, yuv420p, the index at the front for streaming),
which every current browser plays, written with PyAV's bundled FFmpeg; where
that encoder is missing, VP9 in MP4 (also played by current browsers), and
where PyAV is missing altogether OpenCV's MPEG-4 Part 2, with a warning that
browsers will not play it.
"""
from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from hiergen import fileio
from hiergen.errors import HiergenError

_MP4_FOURCC = "mp4v"   # MPEG-4 Part 2: the encoder every opencv-python wheel carries (the last resort)
MP4_CODECS = ("libx264", "libvpx-vp9")   # in order of preference; both play in current browsers
FORMATS = (".mp4", ".gif", ".png")


class VideoError(HiergenError, RuntimeError):
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


def _check_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise VideoError(f"unknown video format {suffix or '(no extension)'!r} for {path}: use .mp4, .gif or "
                         ".png (contact sheet)")
    return suffix


def check_output(path: str | os.PathLike) -> Path:
    """check_writable() plus a known video format (.mp4, .gif, .png): call it before long work."""
    _check_format(path)
    return check_writable(path)


def _check_folder(path: Path) -> Path:
    """The cheap checks: the folder exists and is writable, the path is not a folder; returns the folder."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise VideoError(f"cannot write {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise VideoError(f"cannot write {path}: folder {parent} is not writable (choose another output path)")
    if path.is_dir():
        raise VideoError(f"cannot write {path}: it is a folder (give a file name)")
    return parent


def check_writable(path: str | os.PathLike) -> Path:
    """Raise VideoError unless a file can be created at `path`; call it before long work."""
    path = Path(path)
    parent = _check_folder(path)
    try:                            # what os.access cannot see: read-only and pseudo file systems (/proc)
        with fileio.atomic_path(path) as probe:
            Path(probe).write_bytes(b"")
            raise _Probed
    except _Probed:
        pass
    except OSError as e:
        raise _cannot_write(path, e) from None
    return parent


def _cannot_write(path, e: OSError) -> VideoError:
    return VideoError(f"cannot write {path}: {e.strerror or e} (choose another output path)")


class _Probed(Exception):
    """Ends check_writable's trial write without putting the empty file in place."""


@contextmanager
def atomic_path(path: str | os.PathLike):
    """fileio.atomic_path after the folder checks; an OSError on the way (a pseudo file system such as
    /proc, a full disk) becomes a VideoError, and nothing half-written stays."""
    _check_folder(Path(path))
    try:
        with fileio.atomic_path(path) as tmp:
            yield tmp
    except OSError as e:
        raise _cannot_write(path, e) from None


def mp4_encoder() -> str:
    """The codec write_mp4 uses here: libx264, libvpx-vp9, or mp4v (OpenCV, not played by browsers)."""
    try:
        import av
    except ImportError:
        return "mp4v"
    for name in MP4_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:           # av.codec.codec.UnknownCodecError, and older PyAVs' ValueError
            continue
    return "mp4v"


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float = 8.0, scale: int = 1) -> Path:
    """Write an MP4 that browsers play (H.264, else VP9; see the module docstring); `scale` enlarges tiny
    frames with nearest-neighbour for viewing."""
    frames = _upscale(_check_frames(frames), scale)
    if not (isinstance(fps, (int, float)) and 0 < fps <= 240):
        raise VideoError(f"frame rate {fps!r} is out of range: give 0 < fps <= 240")
    codec = mp4_encoder()
    with atomic_path(path) as tmp:
        if codec == "mp4v":
            warnings.warn("PyAV is not installed: writing MPEG-4 Part 2, which browsers do not play "
                          "(pip install av for H.264)", stacklevel=2)
            _write_mp4_opencv(frames, tmp, fps, path)
        else:
            _write_mp4_av(frames, tmp, fps, codec)
        if os.path.getsize(tmp) == 0:
            raise VideoError(f"the {codec} encoder wrote an empty MP4 for {path}")
    return Path(path)


def _write_mp4_av(frames: np.ndarray, tmp: str | os.PathLike, fps: float, codec: str) -> None:
    import av
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:              # 4:2:0 chroma needs even sides: repeat the last row / column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"} if codec == "libx264" else {"crf": "20", "b": "0"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _write_mp4_opencv(frames: np.ndarray, tmp, fps: float, path) -> None:
    _, h, w, _ = frames.shape
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*_MP4_FOURCC), float(fps), (w, h))
    if not writer.isOpened():
        raise VideoError(f"OpenCV could not open an MP4 writer for {path} ({w}x{h} at {fps} fps)")
    try:
        for f in frames:
            writer.write(np.ascontiguousarray(f[..., ::-1]))
    finally:
        writer.release()


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
    suffix = _check_format(path)
    if suffix == ".mp4":
        return write_mp4(frames, path, fps, scale)
    if suffix == ".gif":
        return write_gif(frames, path, fps, scale)
    return write_sheet(frames, path, caption)
