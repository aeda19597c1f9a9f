import json
from pathlib import Path
import subprocess
import sys

import cv2
import pytest

from hiergen.cli import build_parser, main


def test_help_lists_every_command_with_one_line(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert name in out
        assert any(a.help for a in sub._choices_actions if a.dest == name)


def test_base_modules_never_import_torch():
    code = ("import sys, hiergen.cli, hiergen.synth, hiergen.data, hiergen.rates, hiergen.video, "
            "hiergen.sysinfo, hiergen.progress, hiergen.analyze, hiergen.tools.evaluation, hiergen.tokenizer, "
            "hiergen.runtime.orchestrator, hiergen.runtime.sampler, hiergen.runtime.plan; hiergen.cli.main(['info']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "onnxruntime" in r.stdout and "CUDA usable" in r.stdout


def test_synth_preview_writes_a_readable_mp4(tmp_path, capsys):
    out = tmp_path / "c.mp4"
    assert main(["synth", "--caption", "a small red circle moves left quickly", "-o", str(out), "--seed", "3"]) == 0
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert f"wrote {out}: {n} frames" in capsys.readouterr().out


def test_synth_dataset(tmp_path, capsys):
    assert main(["synth", "--n", "6", "--out", str(tmp_path / "ds")]) == 0
    assert len((tmp_path / "ds" / "index.jsonl").read_text().splitlines()) == 6
    assert main(["synth", "--n", "6", "--out", str(tmp_path / "ds")]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["synth", "--caption", "a small red blob moves left quickly", "-o", "X.mp4"], "unknown word(s) 'blob'"),
    (["synth", "--caption", "a small red circle stays still", "-o", "X.mp4", "--size", "1000"], "out of range"),
    (["synth", "--caption", "a small red circle stays still", "-o", "nodir/X.mp4"], "does not exist"),
    (["synth", "--caption", "a small red circle stays still", "-o", "X.avi"], "use .mp4, .gif or .png"),
    (["synth", "--caption", "a small red circle stays still"], "needs -o"),
    (["synth"], "give either"),
])
def test_synth_bad_input(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_eval_synth_writes_json_plot_and_markdown(tmp_path, capsys):
    js, png, md = tmp_path / "e.json", tmp_path / "e.png", tmp_path / "e.md"
    assert main(["eval", "--synth", "12", "--json", str(js), "--plot", str(png), "--markdown", str(md)]) == 0
    report = json.loads(js.read_text())
    assert report["n"] == 12 and set(report["accuracy"]) >= {"colour", "shape", "size", "motion"}
    assert all(0 <= v <= 1 for v in report["accuracy"].values()) and len(report["by_frame"]) == 33
    assert report["shuffled_captions"]["n"] == 12 and report["source"]["synth"] == 12
    assert cv2.imread(str(png)) is not None and "| captions | 12 |" in md.read_text()


def test_eval_dataset_split_and_mp4_roundtrip(tmp_path, capsys):
    assert main(["synth", "--n", "40", "--out", str(tmp_path / "ds")]) == 0
    js = tmp_path / "e.json"
    assert main(["eval", "--clips", str(tmp_path / "ds"), "--split", "train", "--mp4-roundtrip",
                 "--json", str(js)]) == 0
    report = json.loads(js.read_text())
    assert report["n"] == 36 and report["source"]["mp4_roundtrip"] is True


@pytest.mark.parametrize("argv, fragment", [
    (["eval", "--clips", "nowhere"], "not a hiergen dataset"),
    (["eval", "--synth", "0"], "positive number"),
    (["eval", "--synth", "2", "--json", "missing/dir/e.json"], "does not exist"),
])
def test_eval_bad_input(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_eval_through_the_shipped_tokenizer(tmp_path, capsys):
    js = tmp_path / "e.json"
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "vqvae" / "final.safetensors"
    assert main(["eval", "--synth", "4", "--vqvae", str(shipped), "--json", str(js)]) == 0
    report = json.loads(js.read_text())
    assert report["source"]["vqvae"].endswith("final.safetensors") and report["accuracy"]["colour"] == 1.0


def test_eval_with_a_missing_tokenizer(tmp_path, capsys):
    assert main(["eval", "--synth", "2", "--vqvae", str(tmp_path / "none.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv, want", [([], None), (["--keyframe-rate", "4"], {"quickly": 4, "slowly": 4, "default": 4})])
def test_export_keyframe_rate_fixes_the_plan(tmp_path, monkeypatch, argv, want):
    """--keyframe-rate writes one keyframe rate for every speed word into the package's plan (the one-rate
    ablation); --keyframe / --interp put another recipe's video models into the package."""
    pytest.importorskip("torch")
    import hiergen.export.package as package
    import hiergen.runtime.check as check
    seen = {}

    def fake_export(checkpoints, vqvae, out, force=False, keyframe=None, interp=None, plan=None):
        seen.update(plan=plan, keyframe=keyframe, interp=interp)
        return Path(out)
    monkeypatch.setattr(package, "export_package", fake_export)
    from types import SimpleNamespace
    shipped = SimpleNamespace(weights=SimpleNamespace(bytes=1), fragments={})
    monkeypatch.setattr(check, "check_package", lambda path: {"manifest": shipped})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_bytes(b"x")
    assert main(["export", "--out", str(tmp_path / "out"), *argv]) == 0
    assert (seen["plan"] and seen["plan"].keyframe_rate) == want
    assert seen["keyframe"] is seen["interp"] is None
    assert main(["export", "--out", str(tmp_path / "out"), "--keyframe", "k.safetensors", "--interp", "i.safetensors"]) == 0
    assert (seen["keyframe"], seen["interp"]) == ("k.safetensors", "i.safetensors")


def test_export_refuses_a_keyframe_rate_the_data_has_not(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--keyframe-rate", "3"])
    assert "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------- generate: checked before any work
@pytest.fixture
def no_load(monkeypatch):
    """Pipeline.load fails the test: the input must be refused before the model loads."""
    from hiergen.runtime import pipeline

    def refuse(*a, **k):
        raise AssertionError("the model was loaded although the input was bad")
    monkeypatch.setattr(pipeline.Pipeline, "load", classmethod(lambda cls, *a, **k: refuse()))


PROMPT = ["a", "small", "red", "circle", "moves", "left", "slowly"]


@pytest.mark.parametrize("extra, fragment", [
    (["-o", "/proc/o.mp4"], "cannot write /proc/o.mp4"),
    (["-o", "o.avi"], "unknown video format '.avi'"),
    (["-o", "o"], "unknown video format '(no extension)'"),
    (["--threads", "1000"], "--threads must be 1 to"),
    (["--threads", "0"], "--threads must be 1 to"),
    (["--threads", "-1"], "--threads must be 1 to"),
    (["--seed", str(2 ** 64)], "seed must be a whole number from 0 to 2**64 - 1"),
    (["--seed", str(2 ** 70)], "seed must be a whole number"),
    (["--seed", "-1"], "seed must be a whole number"),
    (["--frames", "7"], "frames must be one of 5, 9, 17, 33"),
    (["--top-k", "-2"], "top_k must be a whole number >= 0"),
    (["--fps", "0"], "--fps must be above 0"),
    (["--out", "d"], "--out DIR goes with --prompts"),
])
def test_generate_refuses_bad_input_before_loading_the_model(tmp_path, monkeypatch, capsys, no_load, extra,
                                                             fragment):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", *PROMPT, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hiergen: error: ") and fragment in err, err
    assert not [p for p in tmp_path.iterdir() if p.name != "d"]          # nothing written


def test_generate_needs_exactly_one_prompt_source(tmp_path, capsys, no_load):
    assert main(["generate"]) == 2
    assert "give one prompt" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("# nothing\n\n")
    assert main(["generate", "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "v")]) == 2
    assert "holds no prompt" in capsys.readouterr().err


def test_generate_png_with_sheet_writes_it_once_and_json_reports_it(tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main(["generate", *PROMPT, "--frames", "5", "-o", str(out), "--sheet", "--json", "-q"]) == 0
    cap = capsys.readouterr()
    report = json.loads(cap.out)
    assert report["files"] == [str(out)] and report["frames"] == 5 and report["width"] == 64
    assert cap.err.count(f"wrote {out}") == 1
    assert out.is_file()


def test_generate_many_prompts_from_a_file_with_one_pipeline(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a small red circle moves left slowly\n# a comment\n\na large blue square bounces quickly\n")
    assert main(["generate", "--prompts", str(prompts), "--out", str(tmp_path / "v"), "--frames", "5",
                 "--fps", "4", "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in report] == ["a small red circle moves left slowly", "a large blue square bounces quickly"]
    assert all(r["fps"] == 4 for r in report)
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert names == ["001-a-small-red-circle-moves-left-slowly.mp4", "002-a-large-blue-square-bounces-quickly.mp4"]
    import av
    with av.open(str(tmp_path / "v" / names[0])) as c:
        assert float(c.streams.video[0].average_rate) == 4


def test_info_and_check_print_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "onnxruntime" in json.dumps(info)
    assert main(["check", "models/default", "--json", "--no-onnx-checker"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["fragments"] == 11 and "onnxruntime load" in report["checks"]


def test_check_runs_without_the_onnx_package():
    """The base install has no onnx: check still loads every fragment in ONNX Runtime and says what it skipped."""
    code = ("import sys; sys.modules['onnx'] = None; import importlib.util as u; real = u.find_spec; "
            "u.find_spec = lambda n, *a: None if n == 'onnx' else real(n, *a); "
            "from hiergen.cli import main; sys.exit(main(['check', 'models/default']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ONNX checker skipped" in r.stdout and "onnxruntime load" in r.stdout


def test_every_command_help_has_examples(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name, parser in sub.choices.items() if "examples:" not in parser.format_help()]
    assert not missing, f"--help without examples: {missing}"
    top = build_parser().format_help()
    assert "hiergen generate" in top and "exit status 2" in top


def test_train_checkpoint_interval_reaches_the_transformer_recipe(monkeypatch):
    from hiergen.training import recipes
    seen = {}
    monkeypatch.setattr(recipes, "train_models", lambda *a, **k: seen.update(overrides=a[3]))
    assert main(["train", "keyframe", "--tokens", "t", "--out", "o", "--ckpt-every", "10",
                 "--ckpt-minutes", "2.5"]) == 0
    assert seen["overrides"]["ckpt_every"] == 10 and seen["overrides"]["ckpt_minutes"] == 2.5


def test_every_command_is_one_function_in_its_wing():
    import importlib

    from hiergen.cli import COMMANDS
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, target in COMMANDS.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    cli_functions = [n for n in vars(importlib.import_module("hiergen.cli")) if n.startswith("cmd_")]
    assert not cli_functions, f"command logic left in cli.py: {cli_functions}"


def test_a_stopped_training_run_says_where_it_stopped(monkeypatch, capsys):
    from hiergen.training import commands
    from hiergen.training.train_transformer import TrainingStopped

    def stopped(args):
        raise TrainingStopped("stopped at step 3 of 6; resume point o/t2i.last.safetensors: run the same command")
    monkeypatch.setattr(commands, "train", stopped)
    assert main(["train", "t2i", "--tokens", "t", "--out", "o"]) == 130
    assert "stopped at step 3 of 6" in capsys.readouterr().err
