"""The typed manifest: one structure that export writes and every reader reads."""
import json
from dataclasses import replace

import pytest

from hiergen.runtime.manifest import FRAGMENTS, Manifest, fragment_name
from hiergen.runtime.package import PackageError, load_manifest
from hiergen.runtime.pipeline import DEFAULT_PACKAGE


def test_the_shipped_manifest_round_trips_exactly():
    raw = json.loads((DEFAULT_PACKAGE / "manifest.json").read_text())
    m = Manifest.from_dict(raw)
    assert m.to_dict() == raw
    assert Manifest.from_dict(m.to_dict()) == m


def test_fragments_are_named_and_typed_once():
    m = load_manifest(DEFAULT_PACKAGE)
    assert set(m.fragments) == set(FRAGMENTS) and len(FRAGMENTS) == 11
    step = m.fragment("interp", "step")
    assert (step.model, step.role) == ("interp", "step")
    assert m.fragments[step.decode].role == "decode" and m.fragments[step.prefill].role == "prefill"
    assert step.kv_cache.past_names[0] == "past_k_base_0" and step.input("tokens").shape == ("batch", "new_tokens")
    assert m.plan.top_k == 4 and m.model_config.grid == 8 and m.image_size == 64
    with pytest.raises(ValueError, match="no fragment"):
        fragment_name("vqvae", "step")


def test_a_malformed_manifest_is_refused_with_a_fix(tmp_path):
    raw = json.loads((DEFAULT_PACKAGE / "manifest.json").read_text())
    del raw["weights"]["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(PackageError, match="malformed .*rebuild the package"):
        load_manifest(tmp_path)


def test_changed_fields_survive_the_round_trip():
    m = load_manifest(DEFAULT_PACKAGE)
    f = replace(m.fragment("t2i", "decode"), precision="fp16")
    again = Manifest.from_dict(replace(m, fragments={**m.fragments, f.name: f}).to_dict())
    assert again.fragment("t2i", "decode").precision == "fp16"
