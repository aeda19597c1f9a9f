import numpy as np
import pytest

from hiergen.rates import interp_rates, keyframe_rate, sample_fixed, sample_interp, sample_keyframes, span, window


def test_keyframe_rate_is_the_lowest_that_fits():
    assert keyframe_rate(4) is None
    assert keyframe_rate(5) == 16
    assert keyframe_rate(8) == 16
    assert keyframe_rate(9) == 8
    assert keyframe_rate(17) == 4
    assert keyframe_rate(32) == 4
    assert keyframe_rate(33) == 2
    assert keyframe_rate(64) == 2
    assert keyframe_rate(65) == 1
    assert keyframe_rate(500) == 1


@pytest.mark.parametrize("n_frames", list(range(5, 140, 3)))
def test_keyframe_windows_span_the_whole_clip(n_frames):
    rng = np.random.default_rng(n_frames)
    rate, idx = sample_keyframes(n_frames, rng)
    assert rate == keyframe_rate(n_frames)
    assert len(idx) == 5 and idx[0] == 0 and idx[-1] == n_frames - 1       # the whole action
    gaps = np.diff(idx)
    # evenly spread; below 1 fps (clips over 4 s) the gaps may exceed two strides
    assert gaps.max() - gaps.min() <= 1 and gaps.min() >= 16 // rate
    if rate > 1:
        assert gaps.max() <= 2 * (16 // rate)


@pytest.mark.parametrize("n_frames,rate", [(5, 16), (17, 16), (17, 4), (40, 8)])
def test_fixed_rate_windows_have_exact_strides(n_frames, rate):
    idx = sample_fixed(n_frames, rate, np.random.default_rng(0))
    assert np.all(np.diff(idx) == 16 // rate) and 0 <= idx[0] and idx[-1] < n_frames
    assert sample_fixed(span(rate) - 1, rate, np.random.default_rng(0)) is None


@pytest.mark.parametrize("n_frames", [9, 17, 25, 33, 65, 129])
def test_interp_windows_use_higher_rates_anywhere(n_frames):
    rng = np.random.default_rng(0)
    key = keyframe_rate(n_frames)
    seen_rates, starts = set(), set()
    for _ in range(200):
        rate, idx = sample_interp(n_frames, rng)
        assert rate > key and idx[-1] < n_frames and np.all(np.diff(idx) == 16 // rate)
        seen_rates.add(rate)
        starts.add(int(idx[0]))
    assert seen_rates == set(interp_rates(n_frames))
    assert len(starts) > 1


def test_no_interp_window_when_native_rate_is_the_keyframe_rate():
    assert sample_interp(6, np.random.default_rng(0)) is None


def test_bad_rate_and_window():
    with pytest.raises(ValueError, match="unknown frame rate"):
        span(3)
    with pytest.raises(ValueError, match="need 65 native frames"):
        window(20, 1, 0)
