"""The torch-free Pipeline over the shipped model package."""
import json
import re
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from hiergen.cli import main
from hiergen.runtime.package import PackageError
from hiergen.runtime.pipeline import DEFAULT_PACKAGE, ImageError, Pipeline, PromptError, fit_images
from hiergen.runtime.options import OptionError
from hiergen.video import VideoError, write_png
from hiergen.synth import render

PROMPT = "a small red circle moves left slowly"


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.load(threads=1)


@pytest.fixture(scope="module")
def user_frames():
    """Five 64x64 frames of a clip unlike PROMPT's video, so generated frames cannot pass for them."""
    clip = render("a large yellow square moves right quickly", seed=1)
    return clip.frames[np.linspace(0, len(clip.frames) - 1, 5).round().astype(int)]


def test_full_generation_never_imports_torch(tmp_path):
    code = ("import sys; from hiergen import Pipeline; p = Pipeline.load(threads=1); "
            "v = p.generate('a small red circle moves left slowly', frames=33, seed=0); "
            f"v.save({str(tmp_path / 'v.mp4')!r}); "
            "assert v.frames.shape == (33, 64, 64, 3), v.frames.shape; "
            "k = p.generate('a small red circle moves left slowly', frames=9, keyframes=v.frames[::8]); "
            "assert k.frames.shape == (9, 64, 64, 3), k.frames.shape; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "v.mp4").is_file()


def test_seeded_runs_repeat_and_differ(pipe):
    a = pipe.generate("a large blue square bounces quickly", frames=5, seed=3)
    b = pipe.generate("a large blue square bounces quickly", frames=5, seed=3)
    c = pipe.generate("a large blue square bounces quickly", frames=5, seed=4)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.tokens, c.tokens)
    assert a.fps == 4.0 and a.frames.dtype == np.uint8


def test_two_threads_give_the_same_videos_as_one_after_the_other(pipe):
    prompts = ["a small red circle moves left slowly", "a large green triangle bounces quickly"]
    serial = [pipe.generate(p, frames=5, seed=i).tokens for i, p in enumerate(prompts)]
    out = [None, None]

    def run(i):
        out[i] = pipe.generate(prompts[i], frames=5, seed=i).tokens
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(np.array_equal(a, b) for a, b in zip(serial, out))


@pytest.mark.parametrize("prompt, fragment", [("", "empty prompt"), ("a " * 10, "at most 9")])
def test_bad_prompts(pipe, prompt, fragment):
    with pytest.raises(PromptError, match=fragment):
        pipe.generate(prompt, frames=5)


def test_unknown_words_warn_or_fail_when_strict(pipe):
    with pytest.warns(UserWarning, match="'blob'"):
        pipe.generate("a small red blob", frames=5)
    with pytest.raises(PromptError, match="--strict"):
        pipe.generate("a small red blob", frames=5, strict=True)


def test_tampered_and_foreign_packages_are_refused(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(DEFAULT_PACKAGE, pkg)
    with open(pkg / "interp_step.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(PackageError, match="rebuild the package with `hiergen export`"):
        Pipeline.load(pkg)
    shutil.copy(DEFAULT_PACKAGE / "interp_step.onnx", pkg / "interp_step.onnx")
    m = json.loads((pkg / "manifest.json").read_text())
    (pkg / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(PackageError, match="format version"):
        Pipeline.load(pkg)


def test_init_image_becomes_frame_1(pipe, user_frames, tmp_path):
    path = write_png(user_frames[0], tmp_path / "first.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # a 64x64 image is used as it is: no resize warning
        video = pipe.generate(PROMPT, frames=5, seed=0, init_image=path)
    first = pipe.codec.encode(user_frames[:1])                                   # (1, g, g)
    assert np.array_equal(video.tokens[0], first[0])
    assert np.array_equal(video.frames[0], pipe.codec.decode(first)[0])
    assert video.tokens.shape[0] == 5 and "t2i" not in video.result.timings and "encode" in video.result.timings


def test_keyframes_are_kept_and_interpolated(pipe, user_frames):
    big = np.repeat(np.repeat(user_frames, 2, axis=1), 2, axis=2)               # 128x128: resized back exactly
    with pytest.warns(UserWarning, match=r"keyframes 1, 2, 3, 4, 5 \(128x128\) resized to the model's 64x64"):
        video = pipe.generate(PROMPT, frames=9, seed=0, keyframes=list(big))
    keys = pipe.codec.encode(user_frames)
    assert video.tokens.shape[0] == 9 and video.fps == 2.0
    assert np.array_equal(video.tokens[::2], keys)
    assert set(video.result.timings) == {"encode", "interp1"}
    five = pipe.generate(PROMPT, frames=5, keyframes=user_frames)                # no round: the frames re-encoded
    assert np.array_equal(five.tokens, keys) and np.array_equal(five.frames, pipe.codec.decode(keys))


def test_other_sizes_are_centre_cropped_then_resized(user_frames):
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(user_frames[0], 3, axis=0), 3, axis=1)            # (192, 192, 3)
    wide = np.concatenate([rng.integers(0, 256, (192, 40, 3), np.uint8), big,
                           rng.integers(0, 256, (192, 40, 3), np.uint8)], axis=1)  # noise beside it is cropped away
    with pytest.warns(UserWarning, match=r"init image \(272x192\) centre-cropped"):
        assert np.array_equal(fit_images([wide], 64, "init image")[0], user_frames[0])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"init_image": "missing.png"}, "init image: image missing.png does not exist"),
    ({"keyframes": ["a.png"] * 4}, "4 keyframes cannot make 9 frames: give 5 or 9 keyframes"),
    ({"keyframes": ["a.png"] * 17}, "give 5 or 9 keyframes"),
    ({"keyframes": "a.png"}, "list of images"),
    ({"init_image": "a.png", "keyframes": ["a.png"] * 5}, "not both"),
    ({"init_image": np.zeros((64, 64, 3), np.float32)}, "uint8 RGB array"),
])
def test_bad_user_frames(pipe, kwargs, fragment):
    with pytest.raises(ImageError, match=fragment):
        pipe.generate(PROMPT, frames=9, **kwargs)


def test_missing_keyframe_file_is_named(pipe, user_frames, tmp_path):
    paths = [write_png(f, tmp_path / f"{i}.png") for i, f in enumerate(user_frames)]
    paths[2].unlink()
    with pytest.raises(ImageError, match="keyframe 3: image .*2.png does not exist"):
        pipe.generate(PROMPT, frames=9, keyframes=paths)


@pytest.mark.parametrize("argv, fragment", [
    (["generate", "a", "small", "red", "circle", "stays", "still", "--frames", "12"], "5, 9, 17, 33"),
    (["generate", "a", "small", "red", "circle", "stays", "still", "--init-image", "first.png"], "does not exist"),
    (["generate", "a", "small", "red", "circle", "stays", "still", "--frames", "9", "--keyframes", "a.png", "b.png"],
     "give 5 or 9 keyframes"),
    (["generate", "a", "small", "red", "circle", "stays", "still", "-o", "nodir/x.mp4"], "does not exist"),
    (["generate", "a", "small", "red", "circle", "stays", "still", "--model", "."], "not a model package"),
    (["generate", "a", "small", "red", "circle", "stays", "still", "--backend", "tensorrt"], "not available"),
])
def test_generate_cli_errors_leave_nothing(tmp_path, monkeypatch, capsys, argv, fragment):
    import onnxruntime as ort
    if "tensorrt" in argv and "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT is available here")
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["-q"]) == 2
    assert fragment in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_generate_cli_writes_video_and_sheet(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    assert main(["generate", "a", "small", "red", "circle", "moves", "left", "slowly", "-o", str(out), "--sheet",
                 "--frames", "9", "-q", "--threads", "1"]) == 0
    assert out.is_file() and out.with_suffix(".png").is_file()
    assert "9 frames at 2 fps" in capsys.readouterr().out


def test_generate_cli_refuses_init_image_with_keyframes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["generate", "a", "small", "red", "circle", "stays", "still", "--init-image", "a.png",
              "--keyframes", "a.png", "b.png", "c.png", "d.png", "e.png"])
    assert e.value.code == 2 and "not allowed with argument --init-image" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_generate_cli_with_keyframes(tmp_path, user_frames, capsys):
    paths = [str(write_png(f, tmp_path / f"{i}.png")) for i, f in enumerate(user_frames)]
    out = tmp_path / "v.mp4"
    assert main(["generate", *PROMPT.split(), "--keyframes", *paths, "--frames", "5", "-o", str(out), "-q",
                 "--threads", "1"]) == 0
    assert out.is_file() and "5 frames at 1 fps" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"prompt": None}, PromptError, "the prompt must be text"),
    ({"prompt": PROMPT, "seed": 1.5}, OptionError, "seed must be a whole number"),
    ({"prompt": PROMPT, "seed": 2 ** 64}, OptionError, "2**64 - 1"),
    ({"prompt": PROMPT, "seed": True}, OptionError, "seed must be a whole number"),
    ({"prompt": PROMPT, "frames": 6}, OptionError, "frames must be one of"),
    ({"prompt": PROMPT, "temperature": float("nan")}, OptionError, "temperature must be a number"),
    ({"prompt": PROMPT, "top_p": 0}, OptionError, "top_p must be a number in (0, 1]"),
])
def test_python_api_refuses_bad_arguments_with_hiergen_errors(pipe, kwargs, error, fragment):
    with pytest.raises(error, match=re.escape(fragment)):
        pipe.generate(**kwargs)


def test_largest_seed_is_accepted_and_differs_from_seed_0(pipe):
    a = pipe.generate(PROMPT, frames=5, seed=2 ** 64 - 1).tokens
    b = pipe.generate(PROMPT, frames=5, seed=0).tokens
    assert not np.array_equal(a, b)


def test_save_to_an_unwritable_place_raises_a_video_error(pipe):
    video = pipe.generate(PROMPT, frames=5)
    with pytest.raises(VideoError, match="cannot write /proc/o.mp4"):
        video.save("/proc/o.mp4")
