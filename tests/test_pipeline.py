"""The torch-free Pipeline over the shipped model package."""
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from hiergen.cli import main
from hiergen.runtime.package import PackageError
from hiergen.runtime.pipeline import DEFAULT_PACKAGE, Pipeline, PromptError


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.load(threads=1)


def test_full_generation_never_imports_torch(tmp_path):
    code = ("import sys; from hiergen import Pipeline; "
            "v = Pipeline.load(threads=1).generate('a small red circle moves left slowly', frames=33, seed=0); "
            f"v.save({str(tmp_path / 'v.mp4')!r}); "
            "assert v.frames.shape == (33, 64, 64, 3), v.frames.shape; "
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
    with pytest.raises(PackageError, match="re-run hiergen export"):
        Pipeline.load(pkg)
    shutil.copy(DEFAULT_PACKAGE / "interp_step.onnx", pkg / "interp_step.onnx")
    m = json.loads((pkg / "manifest.json").read_text())
    (pkg / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(PackageError, match="format version"):
        Pipeline.load(pkg)


@pytest.mark.parametrize("argv, fragment", [
    (["generate", "a", "small", "red", "circle", "stays", "still", "--frames", "12"], "5, 9, 17, 33"),
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
