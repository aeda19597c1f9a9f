import os

import cv2
import numpy as np
import pytest

from hiergen.video import (VideoError, contact_sheet, read_image, read_video, save_video, write_gif,
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


def test_mp4_is_h264_yuv420p_that_browsers_play(tmp_path, clip):
    import av
    path = write_mp4(clip.frames[:, :63, :61], tmp_path / "odd.mp4", fps=12.5)     # odd sides are padded
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (62, 64)
        assert float(stream.average_rate) == pytest.approx(12.5)
        assert sum(1 for _ in c.decode(stream)) == clip.n_frames


def test_without_pyav_mp4_falls_back_to_opencv_with_a_warning(tmp_path, clip, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "av", None)              # import av now fails
    with pytest.warns(UserWarning, match="browsers do not play"):
        path = write_mp4(clip.frames, tmp_path / "a.mp4", fps=16)
    frames, _ = read_video(path)
    assert len(frames) == clip.n_frames


def test_unwritable_place_and_unknown_format_fail_before_writing(tmp_path, clip):
    with pytest.raises(VideoError, match="cannot write /proc/x.mp4"):
        save_video(clip.frames, "/proc/x.mp4", 16)
    with pytest.raises(VideoError, match="unknown video format '.avi'"):
        save_video(clip.frames, tmp_path / "x.avi", 16)
    assert list(tmp_path.iterdir()) == []


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                 if os.path.exists(p)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (.ci/run installs Debian's chromium package)")
def test_generated_mp4_plays_in_headless_chromium(tmp_path):
    """A real browser loads the MP4 `hiergen generate` writes: duration and size read from a <video> element."""
    import json
    import re
    import subprocess
    from hiergen.runtime.pipeline import Pipeline
    video = Pipeline.load(threads=1).generate("a small red circle moves left slowly", frames=9, seed=1)
    video.save(tmp_path / "v.mp4", fps=8)
    (tmp_path / "page.html").write_text(
        "<html><head><title>pending</title></head><body><video id=v src='v.mp4' muted preload=auto></video><script>"
        "const v = document.getElementById('v');"
        "v.onloadedmetadata = () => { document.title = JSON.stringify("
        "{duration: v.duration, width: v.videoWidth, height: v.videoHeight}); };"
        "v.onerror = () => { document.title = 'error ' + (v.error && v.error.code); };"
        "</script></body></html>")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                        "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=10000", "--dump-dom",
                        (tmp_path / "page.html").as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", r.stdout, re.S)
    assert title, r.stderr[-2000:]
    seen = title.group(1).replace("&quot;", '"')
    print("chromium saw:", seen)
    meta = json.loads(seen)
    assert (meta["width"], meta["height"]) == (256, 256)          # 64x64 frames saved at scale 4
    assert meta["duration"] == pytest.approx(9 / 8, abs=0.15)
