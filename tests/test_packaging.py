"""The distribution: `pip install hiergen` carries the shipped model, so the base install can generate."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_the_shipped_model_where_pipeline_load_looks(tmp_path):
    import shutil
    had_build = (ROOT / "build").exists()
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    if not had_build:                                  # setuptools builds in the source tree
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("hiergen-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    manifest = json.loads((ROOT / "models/default/manifest.json").read_text())
    files = [manifest["weights"]["file"]] + [f["file"] for f in manifest["fragments"].values()]
    missing = [f for f in ["manifest.json", *files] if f"hiergen/models/default/{f}" not in names]
    assert not missing, f"the wheel lacks {missing}"
    # Pipeline.load() looks two levels above runtime/pipeline.py: hiergen/models/default in the wheel.
    assert "hiergen/runtime/pipeline.py" in names
    base = [ln for ln in zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
            .splitlines() if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert not any("torch" in ln for ln in base) and any(ln.startswith("Requires-Dist: av") for ln in base)
