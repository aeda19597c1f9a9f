import json

import cv2
import numpy as np
import pytest

from hiergen.analyze import (DRIFT_BINS, ClipReport, EvalReport, _motion, analyze_clip, analyze_frame,
                             evaluate, format_table, shuffled_captions, smoothness)
from hiergen.captions import COLOURS, MOTIONS, SHAPES, SIZES, Caption
from hiergen.clip import Clip
from hiergen.synth import BACKGROUND_RGB, draw_object, render


def _covering_captions() -> list[Caption]:
    """One caption per motion class; colours, shapes, sizes and speeds cycle so all appear."""
    caps = []
    for i, motion in enumerate(MOTIONS):
        speed = None if motion == "stays still" else ("quickly", "slowly")[(i // 2) % 2]
        caps.append(Caption(size=SIZES[(i // 3) % 2], colour=tuple(COLOURS)[i % len(COLOURS)],
                            shape=SHAPES[i % 3], motion=motion, speed=speed))
    return caps


CAPTIONS = _covering_captions()


def test_covering_set_covers_every_attribute():
    assert {c.colour for c in CAPTIONS} == set(COLOURS)
    assert {(c.shape, c.size) for c in CAPTIONS} == {(s, z) for s in SHAPES for z in SIZES}
    assert {c.motion for c in CAPTIONS} == set(MOTIONS)
    assert {c.speed for c in CAPTIONS} == {None, "quickly", "slowly"}


@pytest.fixture(scope="module", params=[32, 64, 128])
def rendered(request):
    side = request.param
    clips = [render(c, seed=i, size=side, textured=bool(i % 2)) for i, c in enumerate(CAPTIONS)]
    return clips, [analyze_clip(c) for c in clips]


def test_recovers_every_attribute_of_rendered_clips(rendered):
    clips, reports = rendered
    wrong = []
    for clip, rep in zip(clips, reports):
        got = rep.correct(clip.caption)
        if not all(got.values()):
            wrong.append(f"{clip.caption!r}: read {rep.size} {rep.colour} {rep.shape} {rep.motion} {rep.speed}")
    assert not wrong, f"side {clips[0].frames.shape[1]}:\n" + "\n".join(wrong)


def test_every_rendered_frame_is_one_correct_object(rendered):
    clips, reports = rendered
    for clip, rep in zip(clips, reports):
        ok = rep.frame_correct(clip.caption)
        assert ok.mean() >= 0.95, f"{clip.caption!r}: {ok.mean():.2f} of frames read correctly"
        assert rep.smoothness == 1.0, f"{clip.caption!r}: smoothness {rep.smoothness:.3f}"


def test_trajectory_follows_the_object(rendered):
    clips, reports = rendered
    for clip, rep in zip(clips, reports):
        assert rep.trajectory.shape == (clip.n_frames, 2) and np.isfinite(rep.trajectory).all()
    still = next(r for c, r in zip(clips, reports) if "still" in c.caption)
    assert np.ptp(still.trajectory, axis=0).max() < 0.5


def _frame(side, objects, textured=False):
    img = np.empty((side, side, 3), np.uint8)
    img[:] = BACKGROUND_RGB
    if textured:
        noise = np.random.default_rng(0).uniform(-14, 14, (side, side, 3))
        img = np.clip(img + noise, 0, 60).astype(np.uint8)
    for shape, colour, half_extent, x, y in objects:
        draw_object(img, shape, x * side, y * side, half_extent * side, COLOURS[colour])
    return img


@pytest.mark.parametrize("side", [32, 64, 256])
def test_single_frames_of_every_shape_colour_and_size(side):
    wrong = []
    for colour in COLOURS:
        for shape in SHAPES:
            for size, half in (("small", 0.09), ("large", 0.18)):
                rep = analyze_frame(_frame(side, [(shape, colour, half, 0.43, 0.56)], textured=True))
                if (rep.n_objects, rep.colour, rep.shape, rep.size) != (1, colour, shape, size):
                    wrong.append(f"{size} {colour} {shape}: read {rep}")
    assert not wrong, "\n".join(wrong)


def test_tiny_frames_still_read_colour_and_size():
    for colour in COLOURS:
        for size, half in (("small", 0.09), ("large", 0.18)):
            rep = analyze_frame(_frame(16, [("square", colour, half, 0.5, 0.5)]))
            assert (rep.n_objects, rep.colour, rep.size) == (1, colour, size), rep


def test_centroid_is_subpixel_accurate():
    rep = analyze_frame(_frame(64, [("circle", "red", 0.12, 0.4, 0.55)]))
    assert rep.centroid == pytest.approx((0.4 * 64, 0.55 * 64), abs=0.15)


def test_counts_two_objects_and_describes_the_larger():
    img = _frame(64, [("circle", "green", 0.09, 0.2, 0.2), ("square", "blue", 0.18, 0.7, 0.7)])
    rep = analyze_frame(img)
    assert rep.n_objects == 2
    assert (rep.colour, rep.shape, rep.size) == ("blue", "square", "large")


def test_empty_frame_has_no_object():
    for textured in (False, True):
        rep = analyze_frame(_frame(64, [], textured=textured))
        assert rep.n_objects == 0 and rep.colour is None and rep.centroid is None


def test_rejects_frames_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        analyze_frame(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        analyze_frame(np.zeros((64, 64), np.uint8))


# ---------------------------------------------------------------- motion rules on raw paths
def _path(points, n=33):
    """Piecewise-linear path through `points` (side units), n frames at constant speed."""
    pts = np.asarray(points, float)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    knots = np.concatenate([[0], np.cumsum(seg)]) / seg.sum()
    t = np.linspace(0, 1, n)
    return np.stack([np.interp(t, knots, pts[:, 0]), np.interp(t, knots, pts[:, 1])], axis=1)


@pytest.mark.parametrize("points, motion", [
    ([(0.2, 0.5), (0.8, 0.5)], "moves right"),
    ([(0.5, 0.8), (0.5, 0.3)], "moves up"),
    ([(0.8, 0.3), (0.3, 0.3), (0.3, 0.8)], "moves left then down"),
    ([(0.3, 0.8), (0.3, 0.3), (0.8, 0.3)], "moves up then right"),
    ([(0.5, 0.8), (0.5, 0.3), (0.5, 0.8), (0.5, 0.3), (0.5, 0.8)], "bounces"),
    ([(0.5, 0.5), (0.52, 0.51)], "stays still"),
])
def test_motion_classes_survive_jitter(points, motion):
    rng = np.random.default_rng(0)
    p = _path(points) + rng.normal(0, 0.01, (33, 2))
    assert _motion(p)[0] == motion


@pytest.mark.parametrize("points", [
    [(0.5, 0.8), (0.5, 0.3), (0.5, 0.8)],                       # one hump is not a bounce
    [(0.5, 0.8), (0.5, 0.3), (0.5, 0.8), (0.5, 0.3), (0.5, 0.8), (0.5, 0.3), (0.5, 0.8)],  # three
    [(0.2, 0.2), (0.8, 0.8)],                                   # diagonal
    [(0.2, 0.5), (0.8, 0.5), (0.2, 0.5)],                       # there and back
])
def test_paths_outside_the_grammar_have_no_motion(points):
    assert _motion(_path(points))[0] is None


def test_order_of_two_phases_matters():
    assert _motion(_path([(0.8, 0.3), (0.3, 0.3), (0.3, 0.8)]))[0] == "moves left then down"
    assert _motion(_path([(0.8, 0.3), (0.8, 0.8), (0.3, 0.8)]))[0] == "moves down then left"


def test_object_missing_in_most_frames_has_no_motion():
    p = _path([(0.2, 0.5), (0.8, 0.5)])
    p[::3] = np.nan
    assert _motion(p)[0] == "moves right"                     # a third missing: interpolated
    p[1::3] = np.nan
    assert _motion(p)[0] is None


def test_speed_follows_the_duration():
    for speed in ("quickly", "slowly"):
        for seed in range(3):
            rep = analyze_clip(render(f"a small red square moves right then up {speed}", seed=seed))
            assert rep.speed == speed, (seed, rep.speed_value)


def test_teleporting_object_is_not_smooth():
    clip = render("a large white circle moves right slowly", seed=1)
    frames = clip.frames.copy()
    frames[20] = clip.frames[-1]                               # jump to the end and back
    jumpy = analyze_clip(Clip(frames=frames, fps=clip.fps, caption=clip.caption))
    assert analyze_clip(clip).smoothness == 1.0
    assert jumpy.smoothness < 1.0
    # Median step 1 px: a 10 px hop there and back is a jump (> 3 x 1 + 1.5), 1 px steps are not.
    assert smoothness(np.array([[0.0, 0], [1, 0], [2, 0], [12, 0], [3, 0], [4, 0]]), 64) == pytest.approx(0.6)
    assert smoothness(np.array([[0.0, 0], [1, 0], [np.nan, np.nan], [3, 0], [4, 0]]), 64) == 1.0


# ---------------------------------------------------------------- sets of clips
@pytest.fixture(scope="module")
def set64():
    clips = [render(c, seed=10 + i, size=64) for i, c in enumerate(CAPTIONS)]
    return clips, [analyze_clip(c) for c in clips]


def _mp4_round_trip(clip: Clip, path) -> Clip:
    h, w = clip.frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (w, h))
    for f in clip.frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    cap, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1])
    cap.release()
    assert len(frames) == clip.n_frames
    return Clip(np.ascontiguousarray(np.stack(frames)), clip.fps, clip.caption)


def test_reads_clips_back_from_mp4(set64, tmp_path):
    clips, _ = set64
    report = evaluate([_mp4_round_trip(c, tmp_path / f"{i}.mp4") for i, c in enumerate(clips)])
    assert all(v == 1.0 for v in report.accuracy.values()), report.accuracy
    assert report.one_object_rate == 1.0 and min(report.by_frame) >= 0.95


def test_shuffled_captions_score_far_below_ground_truth(set64):
    clips, reports = set64
    truth = evaluate(clips, reports=reports)
    shuffled = shuffled_captions([c.caption for c in clips], seed=0)
    assert sorted(shuffled) == sorted(c.caption for c in clips)
    assert all(s != c.caption for s, c in zip(shuffled, clips))
    floor = evaluate(clips, shuffled, reports=reports)
    assert all(v == 1.0 for v in truth.accuracy.values()), truth.accuracy
    assert floor.accuracy["colour"] < 0.3 and floor.accuracy["motion"] < 0.3, floor.accuracy
    assert np.mean(list(floor.accuracy.values())) < 0.5, floor.accuracy
    assert np.mean(floor.by_frame) < 0.3 * np.mean(truth.by_frame)


def test_json_has_the_documented_shape(set64):
    clips, reports = set64
    out = evaluate(clips, reports=reports).to_json()
    json.dumps(out)
    assert set(out) == {"n", "accuracy", "one_object_rate", "by_frame", "by_frame_basis", "smoothness",
                        "two_phase_motion", "held_out"}
    assert out["n"] == len(clips) and isinstance(out["n"], int)
    assert set(out["accuracy"]) == {"colour", "shape", "size", "motion", "speed"}
    fractions = [*out["accuracy"].values(), out["one_object_rate"], out["smoothness"],
                 out["two_phase_motion"], *out["by_frame"]]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in fractions)
    # The clips differ in length, so the drift curve is on normalised time.
    assert out["by_frame_basis"] == "normalised_time" and len(out["by_frame"]) == DRIFT_BINS
    assert any(c.held_out for c in CAPTIONS) and set(out["held_out"]) == set(out["accuracy"])
    plain = [i for i, c in enumerate(CAPTIONS) if not c.held_out]
    assert evaluate([clips[i] for i in plain], reports=[reports[i] for i in plain]).held_out is None


def test_equal_length_clips_keep_frame_indices_and_held_out_pairs():
    clips = [render(c, seed=s, size=32) for s, c in enumerate([
        "a small orange triangle moves left quickly", "a large cyan circle moves up quickly"])]
    clips = [Clip(c.frames[:17], c.fps, c.caption) for c in clips]
    report = evaluate(clips)
    out = report.to_json()
    assert out["by_frame_basis"] == "index" and len(out["by_frame"]) == 17
    assert out["two_phase_motion"] is None
    assert out["held_out"] == {"colour": 1.0, "shape": 1.0, "size": 1.0, "motion": 1.0, "speed": 1.0}
    assert json.loads(report.dumps()) == out


def test_evaluate_rejects_mismatched_captions(set64):
    clips, _ = set64
    with pytest.raises(ValueError, match="captions"):
        evaluate(clips, [clips[0].caption])
    with pytest.raises(ValueError, match="at least one"):
        evaluate([])


def test_format_table(set64):
    clips, reports = set64
    rotated = [c.caption for c in clips[1:] + clips[:1]]
    table = format_table({"ground truth": evaluate(clips, reports=reports),
                          "shuffled captions": evaluate(clips, rotated, reports=reports)})
    lines = table.splitlines()
    assert len(lines) == 4
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "", "n", "colour", "shape", "size", "motion", "speed", "one object", "smoothness"]
    assert lines[2].startswith(f"| ground truth | {len(clips)} | 100.0 |")
    assert lines[3].startswith("| shuffled captions |")


def test_reports_are_plain_data(set64):
    clips, reports = set64
    assert isinstance(reports[0], ClipReport) and isinstance(reports[0].frames[0].n_objects, int)
    assert isinstance(evaluate(clips[:2]), EvalReport)
