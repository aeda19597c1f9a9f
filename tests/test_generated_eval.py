"""`hiergen eval --prompts`: methods, the sample sheet, scoring pre-analysed clips, the CLI and its error paths."""
import json
import time

import cv2
import numpy as np
import pytest

from hiergen.tools import generated_eval
from hiergen.analyze import analyze_clip, evaluate, score_reports, shuffled_captions
from hiergen.captions import parse
from hiergen.cli import main
from hiergen.tools.generated_eval import FRAMES, Method, methods_for, sample_sheet
from hiergen.video import contact_sheet
from hiergen.synth import caption_for, render, seeds_for_split


# ------------------------------------------------------------ methods
def test_methods_hierarchical_only_by_default():
    assert methods_for(None, None, {}) == [Method("hierarchical", None)]
    assert methods_for("pkg", None, {}) == [Method("hierarchical", "pkg")]


def test_baseline_adds_two_frame_by_frame_methods_and_ablations_are_hierarchical():
    ms = methods_for("main", "base", {"one fixed rate": "fixed", "no text dropout": "nodrop"})
    assert [(m.package, m.overlap) for m in ms] == [("main", 0), ("base", 1), ("base", 2), ("fixed", 0), ("nodrop", 0)]
    assert [m.name for m in ms][3:] == ["one fixed rate", "no text dropout"]
    assert len({m.name for m in ms}) == len(ms), "each method reports under its own name"


@pytest.mark.parametrize("name", ["hierarchical", "ground truth (rendered)", "hierarchical, shuffled captions",
                                  "source", "frame-by-frame (overlap 2)"])
def test_an_ablation_cannot_take_a_name_the_report_uses(name):
    with pytest.raises(ValueError, match="taken by the report"):
        methods_for(None, "base", {name: "pkg"})


# ------------------------------------------------------------ sample sheet
def video(n, value):
    return np.full((n, 16, 16, 3), value, np.uint8)


def test_sample_sheet_stacks_one_row_per_prompt_and_pads_widths():
    long, short = video(33, 10), video(9, 200)
    sheet = sample_sheet([long, short], ["a small red circle moves left quickly", "a large blue square stays still"])
    row1 = contact_sheet(long[::4], "a small red circle moves left quickly", cols=9)        # 9 frames
    row2 = contact_sheet(short[::4], "a large blue square stays still", cols=3)              # 3 frames
    assert row2.shape[1] < row1.shape[1]
    assert sheet.shape == (row1.shape[0] + row2.shape[0], row1.shape[1], 3) and sheet.dtype == np.uint8
    assert np.array_equal(sheet[:row1.shape[0]], row1)
    lower = sheet[row1.shape[0]:]
    assert np.array_equal(lower[:, :row2.shape[1]], row2)
    assert (lower[:, row2.shape[1]:] == 250).all(), "the short row is padded with the sheet's background"


def test_sample_sheet_every():
    v = video(33, 0)
    v[::8] = 255                                    # every 8th frame white: sampled every 8 -> all white cells
    assert sample_sheet([v], ["x"], every=8).shape == contact_sheet(v[::8], "x", cols=5).shape
    assert np.array_equal(sample_sheet([v], ["x"], every=8), contact_sheet(v[::8], "x", cols=5))
    # a long row stays one row (contact_sheet alone would wrap 17 frames into rows of 8)
    assert np.array_equal(sample_sheet([v], ["x"], every=2), contact_sheet(v[::2], "x", cols=17))


# ------------------------------------------------------------ score_reports
@pytest.fixture(scope="module")
def rendered():
    seeds = seeds_for_split("test", 6)
    captions = [str(caption_for(s)) for s in seeds]
    clips = [render(c, seed=s) for c, s in zip(captions, seeds)]
    return clips, captions, [analyze_clip(c) for c in clips]


def test_score_reports_is_evaluate_for_analysed_clips(rendered):
    clips, captions, reports = rendered
    assert len({len(c.frames) for c in clips}) > 1, "clips of unequal length exercise the time-normalised basis"
    assert score_reports(reports, captions) == evaluate(clips)
    floor = shuffled_captions(captions)
    assert score_reports(reports, floor) == evaluate(clips, floor)
    assert score_reports(reports, [parse(c) for c in captions]) == score_reports(reports, captions)
    # equal lengths: the per-frame curve is by index, as for generated 33-frame videos
    same = [i for i, c in enumerate(clips) if len(c.frames) == len(clips[0].frames)]
    r = score_reports([reports[i] for i in same], [captions[i] for i in same])
    assert r == evaluate([clips[i] for i in same])
    assert r.by_frame_basis == "index" and len(r.by_frame) == len(clips[0].frames)


def test_score_reports_reads_the_captions_it_is_given(rendered):
    _, captions, reports = rendered
    truth, floor = score_reports(reports, captions), score_reports(reports, shuffled_captions(captions))
    assert truth.n == floor.n == len(captions)
    assert truth.accuracy["colour"] == 1.0 > floor.accuracy["colour"]


def test_score_reports_needs_one_caption_per_report(rendered):
    _, captions, reports = rendered
    with pytest.raises(ValueError, match="one caption per report"):
        score_reports(reports, captions[:-1])
    with pytest.raises(ValueError, match="one caption per report"):
        score_reports([], [])


# ------------------------------------------------------------ the real package
def test_frame_by_frame_video_through_onnx_runtime(monkeypatch):
    monkeypatch.setattr(generated_eval, "_PIPES", {})    # do not keep ONNX Runtime sessions in the test process
    monkeypatch.setattr(generated_eval, "FRAMES", 9)     # 5 + 3 + 3 made, trimmed: a quarter of the work of 33
    frames, fps = generated_eval.make_video(Method("frame-by-frame (overlap 2)", None, 2),
                                            "a small red circle moves left quickly", seed=0)
    assert frames.shape == (9, 64, 64, 3) and frames.dtype == np.uint8 and fps == 16.0


def test_true_keyframes_keep_the_rendered_keyframes(monkeypatch):
    from hiergen.runtime.pipeline import Pipeline
    from hiergen.synth import render
    monkeypatch.setattr(generated_eval, "FRAMES", 9)
    caption = "a large blue square moves up slowly"
    method = generated_eval.methods_for(None, None, {}, true_keyframes=True)[1]
    assert method.true_keyframes and method.name == generated_eval.TRUE_KEYFRAMES
    frames, _ = generated_eval.make_video(method, caption, seed=3)
    clip = render(caption, seed=3)
    keys = clip.frames[np.round(np.linspace(0, clip.n_frames - 1, 5)).astype(int)]
    codec = Pipeline.load(threads=1).codec
    assert np.array_equal(frames[::2], codec.decode(codec.encode(keys)))     # the keyframes, through the VQ-VAE


# ------------------------------------------------------------ CLI
def test_cli_end_to_end(tmp_path, capsys):
    out_json, out_png = tmp_path / "g.json", tmp_path / "s.png"
    assert main(["eval", "--prompts", "2", "--jobs", "1", "--json", str(out_json), "--samples", str(out_png)]) == 0
    doc = json.loads(out_json.read_text())
    assert set(doc) == {"hierarchical", "ground truth (rendered)", "hierarchical, shuffled captions", "source"}
    assert doc["source"]["prompts"] == 2 and doc["source"]["frames"] == FRAMES
    assert [m["overlap"] for m in doc["source"]["methods"]] == [0]
    hier = doc["hierarchical"]
    assert hier["n"] == 2 and hier["by_frame_basis"] == "index" and len(hier["by_frame"]) == FRAMES
    assert doc["ground truth (rendered)"]["n"] == 2
    sheet = cv2.imread(str(out_png))
    cols = len(range(0, FRAMES, 4))
    one_row = contact_sheet(np.zeros((cols, 64, 64, 3), np.uint8), "", cols=cols)
    assert sheet is not None and sheet.shape[1] == one_row.shape[1]
    assert sheet.shape[0] > 2 * one_row.shape[0], "two rows, each under its caption"
    out = capsys.readouterr().out
    assert "| hierarchical |" in out and f"wrote {out_json}" in out and f"wrote {out_png}" in out


@pytest.fixture
def no_generation(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("generation started before the arguments were checked")
    monkeypatch.setattr(generated_eval, "run", refuse)


@pytest.mark.parametrize("argv, fragment", [
    (["--prompts", "0"], "positive number of prompts"),
    (["--prompts", "-3"], "positive number of prompts"),
    (["--prompts", "2", "--ablation", "bad"], "NAME=PACKAGE"),
    (["--prompts", "2", "--ablation", "=pkg"], "NAME=PACKAGE"),
    (["--prompts", "2", "--ablation", "name="], "NAME=PACKAGE"),
    (["--prompts", "2", "--ablation", "hierarchical=pkg"], "taken by the report"),
    (["--prompts", "2", "--ablation", "source=pkg"], "taken by the report"),
    (["--prompts", "2", "--ablation", "x=a", "--ablation", "x=b"], "given twice"),
    (["--prompts", "2", "--split", "train"], "val or test"),
])
def test_bad_arguments(argv, fragment, no_generation, capsys):
    assert main(["eval", *argv]) == 2
    assert fragment in capsys.readouterr().err


class _Stop(Exception):
    pass


def test_split_val_generates_validation_prompts(monkeypatch):
    seen = {}

    def record(methods, n_prompts, jobs=None, n_samples=6, split="test"):
        seen["seeds"] = generated_eval.seeds_for_split(split, n_prompts)
        raise _Stop                                              # stop before any video
    monkeypatch.setattr(generated_eval, "run", record)
    for split in ("val", None):
        with pytest.raises(_Stop):
            main(["eval", "--prompts", "3"] + (["--split", split] if split else []))
        assert seen["seeds"] == generated_eval.seeds_for_split(split or "test", 3)
    assert generated_eval.seeds_for_split("val", 3) != generated_eval.seeds_for_split("test", 3)


@pytest.mark.parametrize("flag", ["--json", "--markdown", "--plot", "--samples"])
def test_unwritable_output_fails_before_generating(flag, tmp_path, no_generation, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    t = time.perf_counter()
    assert main(["eval", "--prompts", "2", "--jobs", "1", flag, str(blocker / "out")]) == 2
    assert time.perf_counter() - t < 5
    assert "cannot write" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["a file"]


def test_missing_package_fails_before_generating(tmp_path, no_generation, capsys):
    assert main(["eval", "--prompts", "2", "--ablation", f"gone={tmp_path / 'nothing'}"]) == 2
    assert "nothing" in capsys.readouterr().err
    assert main(["eval", "--prompts", "2", "--baseline", str(tmp_path / "nothing")]) == 2


def test_keyframes_alone_start_from_the_rendered_first_frame():
    from hiergen.runtime.pipeline import Pipeline
    from hiergen.synth import render
    caption = "a small green circle moves right quickly"
    method = generated_eval.methods_for(None, None, {}, keyframes_alone=True)[1]
    assert method.keyframes_alone and method.name == generated_eval.KEYFRAMES_ALONE
    frames, fps = generated_eval.make_video(method, caption, seed=5)
    first = render(caption, seed=5).frames[:1]
    codec = Pipeline.load(threads=1).codec
    assert frames.shape == (5, 64, 64, 3) and fps == 4.0                     # "quickly": keyframes at 4 fps
    assert np.array_equal(frames[0], codec.decode(codec.encode(first))[0])


def test_cli_keyframes_alone(tmp_path):
    out_json = tmp_path / "k.json"
    assert main(["eval", "--prompts", "1", "--jobs", "1", "--keyframes-alone", "--json", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert doc[generated_eval.KEYFRAMES_ALONE]["n"] == 1 and len(doc[generated_eval.KEYFRAMES_ALONE]["by_frame"]) == 5
