import numpy as np
import pytest

from hiergen.captions import parse
from hiergen.rates import keyframe_rate
from hiergen.synth import (BACKGROUND_RGB, caption_for, render, seeds_for_split, split_of)


def _centroids(frames):
    bright = frames.max(axis=-1) > 90
    ys, xs = [], []
    for m in bright:
        yy, xx = np.nonzero(m)
        ys.append(yy.mean())
        xs.append(xx.mean())
    return np.array(xs), np.array(ys)


def test_deterministic_per_seed():
    a = render("a small red circle moves left quickly", seed=7)
    b = render("a small red circle moves left quickly", seed=7)
    c = render("a small red circle moves left quickly", seed=8)
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("speed, lo, hi", [("quickly", 1.0, 2.0), ("slowly", 4.0, 8.0)])
def test_durations_follow_the_speed(speed, lo, hi):
    durs = [render(f"a small blue square moves up {speed}", seed=s).duration_s for s in range(20)]
    assert lo - 0.07 <= min(durs) and max(durs) <= hi + 0.07
    assert len(set(durs)) > 5  # jittered per clip


@pytest.mark.parametrize("motion, dx, dy", [("moves left", -1, 0), ("moves right", 1, 0),
                                            ("moves up", 0, -1), ("moves down", 0, 1)])
def test_single_direction_motion(motion, dx, dy):
    clip = render(f"a large green circle {motion} slowly", seed=3)
    xs, ys = _centroids(clip.frames)
    assert np.sign(round(xs[-1] - xs[0])) == dx and np.sign(round(ys[-1] - ys[0])) == dy
    assert max(abs(xs[-1] - xs[0]), abs(ys[-1] - ys[0])) > 0.25 * 64


def test_two_phase_motion_in_order():
    clip = render("a large yellow square moves right then down quickly", seed=5)
    xs, ys = _centroids(clip.frames)
    mid = int(np.argmax((xs - xs[0]) - (ys - ys[0])))  # the corner
    assert xs[mid] - xs[0] > 10 and abs(ys[mid] - ys[0]) < 2
    assert ys[-1] - ys[mid] > 10 and abs(xs[-1] - xs[mid]) < 2


def test_bounce_goes_up_and_down_twice_and_still_stays():
    ys = _centroids(render("a small white circle bounces slowly", seed=1).frames)[1]
    d = np.sign(np.diff(ys))
    d = d[d != 0]
    assert np.count_nonzero(np.diff(d)) == 3  # up, down, up, down
    xs, ys = _centroids(render("a small white circle stays still", seed=1).frames)
    assert np.ptp(xs) == 0 and np.ptp(ys) == 0


@pytest.mark.parametrize("size", [16, 33, 64, 128, 256])
def test_object_stays_in_frame_at_every_size(size):
    for seed in range(12):
        cap = caption_for(seed)
        clip = render(cap, seed=seed, size=size)
        assert clip.frames.shape[1:] == (size, size, 3)
        border = np.concatenate([clip.frames[:, 0], clip.frames[:, -1], clip.frames[:, :, 0], clip.frames[:, :, -1]], 1)
        assert border.max() < 90, f"object touches the border: {cap}"


def test_subpixel_antialiased_motion():
    clip = render("a small red square moves right slowly", seed=0)
    xs, _ = _centroids(clip.frames)
    assert np.abs(np.diff(xs)).max() < 1.0  # slow motion: sub-pixel steps
    levels = np.unique(clip.frames[0][..., 0])
    assert len(levels) > 3  # edge pixels are blended, not binary


def test_textured_background_is_dark_and_varied():
    clip = render("a small red square stays still", seed=0, textured=True)
    corner = clip.frames[0, :8, :8].reshape(-1, 3)
    assert corner.max() < 70 and corner.std() > 0.5
    plain = render("a small red square stays still", seed=0).frames[0, 0, 0]
    assert tuple(plain) == BACKGROUND_RGB


@pytest.mark.parametrize("size", [0, 15, 257, 1000])
def test_sizes_out_of_range(size):
    with pytest.raises(ValueError, match="out of range"):
        render("a small red square stays still", size=size)


def test_splits_and_held_out_pairs():
    splits = [split_of(s) for s in range(1000)]
    assert splits.count("train") == 900 and splits.count("val") == 50 and splits.count("test") == 50
    assert not any(caption_for(s).held_out for s in seeds_for_split("train", 3000))
    assert any(caption_for(s).held_out for s in seeds_for_split("test", 300))
    assert all(split_of(s) == "val" for s in seeds_for_split("val", 10, start=100))


def test_every_synth_clip_has_a_keyframe_window():
    for seed in range(200):
        clip = render(caption_for(seed), seed=seed)
        assert keyframe_rate(clip.n_frames) is not None
    assert parse(caption_for(0).text) == caption_for(0)
