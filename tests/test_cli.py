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
    code = ("import sys, hiergen.cli, hiergen.synth, hiergen.data, hiergen.rates, hiergen.runtime.video, "
            "hiergen.sysinfo, hiergen.progress, hiergen.analyze, hiergen.evaluation, hiergen.tokenizer, "
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
    """--keyframe-rate writes one keyframe rate for every speed word into the package's plan (the one-rate ablation)."""
    pytest.importorskip("torch")
    import hiergen.export.package as package
    import hiergen.export.check as check
    seen = {}

    def fake_export(checkpoints, vqvae, out, force=False, keyframe=None, plan=None):
        seen["plan"] = plan
        return Path(out)
    monkeypatch.setattr(package, "export_package", fake_export)
    monkeypatch.setattr(check, "check_package", lambda path: {"weights": {"bytes": 1}, "fragments": {}})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_bytes(b"x")
    assert main(["export", "--out", str(tmp_path / "out"), *argv]) == 0
    assert (seen["plan"] and seen["plan"].keyframe_rate) == want


def test_export_refuses_a_keyframe_rate_the_data_has_not(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--keyframe-rate", "3"])
    assert "invalid choice" in capsys.readouterr().err
