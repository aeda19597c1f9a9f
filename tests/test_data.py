import json
import warnings

import numpy as np
import pytest

from hiergen.data import DatasetError, open_dataset, write_synth_dataset, write_video_dataset
from hiergen.video import write_mp4
from hiergen.synth import render


def test_synth_dataset_round_trip(tmp_path):
    ds = write_synth_dataset(tmp_path / "ds", 25, show_progress=False)
    again = open_dataset(tmp_path / "ds")
    assert len(again) == 25 and again.meta["size"] == 64 and again.meta["fps"] == 16
    rec, clip = next(again.iter_clips())
    assert np.array_equal(clip.frames, render(rec.caption, seed=rec.seed).frames)
    assert {r.split for r in ds.records} <= {"train", "val", "test"}
    assert sum(1 for _ in again.iter_clips("test")) == sum(r.split == "test" for r in ds.records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temporary folder left


def test_existing_folder_needs_force(tmp_path):
    write_synth_dataset(tmp_path / "ds", 3, show_progress=False)
    with pytest.raises(DatasetError, match="--force"):
        write_synth_dataset(tmp_path / "ds", 3, show_progress=False)
    write_synth_dataset(tmp_path / "ds", 4, force=True, show_progress=False)
    assert len(open_dataset(tmp_path / "ds")) == 4
    (tmp_path / "other").mkdir()
    with pytest.raises(DatasetError, match="not a hiergen dataset"):
        write_synth_dataset(tmp_path / "other", 3, force=True, show_progress=False)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import hiergen.data as data

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(data.np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        write_synth_dataset(tmp_path / "ds", 3, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_open_bad_dataset(tmp_path):
    with pytest.raises(DatasetError, match="hiergen synth"):
        open_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "other", "version": 9}))
    (tmp_path / "index.jsonl").write_text("")
    with pytest.raises(DatasetError, match="re-create"):
        open_dataset(tmp_path)


def test_real_video_import_skips_corrupt_files(tmp_path):
    vids = tmp_path / "vids"
    vids.mkdir()
    clip = render("a large blue circle moves right slowly", seed=4, size=96)
    write_mp4(clip.frames[:, :, 8:88], vids / "ok.mp4", fps=30)  # 96x80 at 30 fps
    (vids / "bad.mp4").write_bytes(b"\x00garbage" * 50)
    index = tmp_path / "captions.jsonl"
    index.write_text("\n".join(json.dumps(x) for x in [
        {"path": "ok.mp4", "caption": clip.caption},
        {"path": "bad.mp4", "caption": "a small red circle stays still"},
        {"path": "gone.mp4", "caption": "a small red circle stays still"},
        {"nonsense": 1},
    ]) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = write_video_dataset(vids, index, tmp_path / "ds", size=64)
    msgs = " ".join(str(w.message) for w in caught)
    assert "bad.mp4" in msgs and "gone.mp4" in msgs and "captions.jsonl:4" in msgs
    assert len(ds) == 1
    rec, got = next(ds.iter_clips())
    assert got.frames.shape[1:] == (64, 64, 3) and got.fps == 16
    # 30 fps in, 16 fps out: the duration is kept.
    assert got.duration_s == pytest.approx((clip.n_frames - 1) / 30, abs=1 / 16)


def test_video_import_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        write_video_dataset(tmp_path / "none", tmp_path / "c.jsonl", tmp_path / "ds")
    (tmp_path / "v").mkdir()
    with pytest.raises(DatasetError, match="one JSON line per video"):
        write_video_dataset(tmp_path / "v", tmp_path / "c.jsonl", tmp_path / "ds")
    (tmp_path / "c.jsonl").write_text(json.dumps({"path": "x.mp4", "caption": "a"}) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match="every input was skipped"):
            write_video_dataset(tmp_path / "v", tmp_path / "c.jsonl", tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
