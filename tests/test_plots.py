import cv2
import numpy as np
import pytest

from hiergen.plots import PALETTE, _log_ticks, _nice_ticks, line_plot


def _has_colour(img, bgr, tol=30, min_pixels=50):
    return int((np.abs(img.astype(int) - bgr).max(axis=2) < tol).sum()) >= min_pixels


def test_draws_every_series_in_its_own_colour(tmp_path):
    x = np.arange(33)
    path = line_plot({"hierarchical": (x, 0.9 - 0.001 * x), "one-stage": (x, 0.9 - 0.02 * x)},
                     tmp_path / "drift.png", "Accuracy by frame", "frame", "accuracy", ylim=(0, 1),
                     size=(640, 400))
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] == 400 and img.shape[1] > 640   # legend column added
    assert _has_colour(img, PALETTE[0]) and _has_colour(img, PALETTE[1])
    assert not _has_colour(img, PALETTE[2], min_pixels=1)
    assert list(tmp_path.iterdir()) == [path]                  # no temporary left behind


def test_a_lower_series_is_drawn_lower(tmp_path):
    x = [0, 1, 2]
    line_plot({"high": (x, [0.9] * 3), "low": (x, [0.1] * 3)}, tmp_path / "a.png", "t", "x", "y",
              ylim=(0, 1), size=(400, 300))
    img = cv2.imread(str(tmp_path / "a.png"))
    rows = lambda bgr: np.nonzero((np.abs(img[:, :350].astype(int) - bgr).max(axis=2) < 30).any(axis=1))[0]
    assert rows(PALETTE[0]).mean() < rows(PALETTE[1]).mean()


def test_log_scale_nan_gaps_and_overwrite(tmp_path):
    path = tmp_path / "loss.png"
    path.write_bytes(b"old")
    steps = np.arange(100)
    loss = 5 * np.exp(-steps / 30) + 0.1
    loss[40:45] = np.nan
    line_plot({"train": (steps, loss)}, path, "Loss", "step", "loss", logy=True)
    assert cv2.imread(str(path)) is not None


def test_ticks_are_round_numbers():
    assert np.allclose(_nice_ticks(0, 1, 6), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert np.allclose(_nice_ticks(0, 32, 8), [0, 5, 10, 15, 20, 25, 30])
    assert np.allclose(_log_ticks(0.05, 60), [0.1, 1, 10])
    assert np.allclose(_log_ticks(0.3, 8), [0.5, 1, 2, 5])


@pytest.mark.parametrize("kwargs, message", [
    ({"series": {}}, "at least one series"),
    ({"series": {"a": ([1, 2], [1])}}, "equally many"),
    ({"series": {"a": ([1, 2], [1, 0])}, "logy": True}, "log-scale"),
    ({"series": {"a": ([1, 2], [1, 2])}, "ylim": (1, 0)}, "ylim"),
    ({"series": {"a": ([1, 2], [np.nan, np.nan])}}, "NaN"),
])
def test_rejects_bad_input(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        line_plot(path=tmp_path / "x.png", title="t", xlabel="x", ylabel="y", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_says_so(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        line_plot({"a": ([0, 1], [0, 1])}, tmp_path / "nope" / "x.png", "t", "x", "y")
