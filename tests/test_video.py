import os

import cv2
import numpy as np
import pytest

from hiergen.runtime.video import (VideoError, contact_sheet, read_image, read_video, save_video, write_gif,
                                   write_mp4, write_sheet)
from hiergen.synth import render


@pytest.fixture(scope="module")
def clip():
    return render("a large orange square moves left then down quickly", seed=2)


def test_mp4_round_trip_keeps_frame_count_and_content(tmp_path, clip):
    path = write_mp4(clip.frames, tmp_path / "a.mp4", fps=16)
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == clip.n_frames
    cap.release()
    frames, fps = read_video(path)
    assert frames.shape == clip.frames.shape and fps == pytest.approx(16)
    err = np.abs(frames.astype(int) - clip.frames.astype(int)).mean()
    assert err < 6, f"mean abs error {err:.2f}"
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_gif_and_sheet(tmp_path, clip):
    gif = write_gif(clip.frames, tmp_path / "a.gif", fps=8, scale=2)
    ok, anim = cv2.imreadanimation(str(gif))
    assert ok and len(anim.frames) == clip.n_frames and anim.frames[0].shape[:2] == (128, 128)
    sheet = contact_sheet(clip.frames[:9], caption=clip.caption)
    assert sheet.ndim == 3 and sheet.shape[1] > 3 * 64
    png = write_sheet(clip.frames, tmp_path / "s.png", clip.caption)
    assert np.array_equal(read_image(png), contact_sheet(clip.frames, clip.caption))


def test_save_video_by_extension(tmp_path, clip):
    for ext in ("mp4", "gif", "png"):
        assert save_video(clip.frames, tmp_path / f"v.{ext}", 16, clip.caption).is_file()
    with pytest.raises(VideoError, match="use .mp4, .gif or .png"):
        save_video(clip.frames, tmp_path / "v.avi", 16)


def test_missing_folder_and_bad_frames(tmp_path, clip):
    with pytest.raises(VideoError, match="does not exist"):
        write_mp4(clip.frames, tmp_path / "nope" / "a.mp4")
    with pytest.raises(VideoError, match="uint8 RGB"):
        write_mp4(clip.frames.astype(np.float32), tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_folder(tmp_path, clip, monkeypatch):
    # Simulated: the suite may run as root, who can write anywhere.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(VideoError, match="not writable"):
        write_mp4(clip.frames, tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, clip, monkeypatch):
    target = tmp_path / "a.gif"
    target.write_bytes(b"old")
    monkeypatch.setattr(cv2, "imwriteanimation", lambda *a: False)
    with pytest.raises(VideoError):
        write_gif(clip.frames, target)
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_unreadable_videos(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError):
        read_video(junk)
