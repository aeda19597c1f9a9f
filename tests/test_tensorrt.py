"""runtime/tensorrt.py without TensorRT: engine cache keys and staleness, profiles from the manifest, the TensorRT
EP's options from the package, builder flags per TensorRT version, the build flow against a stand-in tensorrt
module, and the one-line refusal where TensorRT is absent. Engines themselves need TensorRT and a GPU
(marker `tensorrt`; none of the machines that wrote this had them)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from dataclasses import fields, replace

import pytest

from hiergen.runtime import tensorrt as rt
from hiergen.runtime.package import load_manifest
from hiergen.runtime.pipeline import DEFAULT_PACKAGE

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(DEFAULT_PACKAGE)


def key_of(manifest, name="keyframe_decode"):
    return rt.EngineKey.of(manifest.fragments[name], "10.3.0", "Orin", "8.7")


def test_engine_key_changes_with_every_input(manifest):
    key = key_of(manifest)
    assert key.digest() == key_of(manifest).digest()                  # deterministic
    changed = {"fragment": "interp_decode", "fragment_sha256": "0" * 64, "precision": "fp16", "tensorrt": "11.0.0",
               "gpu": "NVIDIA H200", "compute_capability": "9.0", "profiles": "{}"}
    assert set(changed) == {f.name for f in fields(rt.EngineKey)}     # every field is tested
    digests = {replace(key, **{k: v}).digest() for k, v in changed.items()}
    assert len(digests) == len(changed) and key.digest() not in digests


def test_engine_key_follows_the_fragment(manifest):
    spec = manifest.fragments["keyframe_decode"]
    a = rt.EngineKey.of(spec, "10.3.0", "Orin", "8.7")
    assert rt.EngineKey.of(replace(spec, sha256="f" * 64), "10.3.0", "Orin", "8.7").digest() != a.digest()
    assert rt.EngineKey.of(replace(spec, precision="int8-qdq"), "10.3.0", "Orin", "8.7").digest() != a.digest()
    wider = {**spec.profiles, "max": {**spec.profiles["max"], "tokens": (16, 1)}}
    assert rt.EngineKey.of(replace(spec, profiles=wider), "10.3.0", "Orin", "8.7").digest() != a.digest()


def test_cache_finds_current_engines_and_refuses_stale_ones(tmp_path, manifest):
    cache = rt.EngineCache(tmp_path)
    key = key_of(manifest)
    assert cache.lookup(key) is None
    path = cache.store(key, b"engine bytes")
    assert cache.lookup(key) == path
    assert cache.lookup(replace(key, tensorrt="10.4.0")) is None      # another TensorRT: another engine
    path.write_bytes(b"engine bytes, truncated or replaced")          # same key, other bytes: stale
    assert cache.lookup(key) is None
    cache.store(key, b"engine bytes")
    meta = cache.paths(key)[1]
    meta.write_text(meta.read_text().replace("Orin", "Xavier"))       # key file of another build
    assert cache.lookup(key) is None


def test_profiles_come_from_the_manifest(manifest):
    spec = manifest.fragments["keyframe_decode"]
    p = rt.profiles(spec)
    assert list(p) == [t.name for t in spec.inputs]
    for name, (lo, opt, hi) in p.items():
        assert (lo, opt, hi) == tuple(tuple(spec.profiles[lv][name]) for lv in ("min", "opt", "max"))
    assert p["tokens"][0][0] == 1 and p["tokens"][2][0] == 8        # batch 1..8, one new token
    vq = rt.profiles(manifest.fragments["vqvae_decoder"])
    assert vq["tokens"] == ((1, 8, 8), (5, 8, 8), (33, 8, 8))


def test_a_symbolic_input_without_profile_is_refused(manifest):
    spec = manifest.fragments["t2i_decode"]
    bare = replace(spec, profiles={lv: {} for lv in spec.profiles})
    with pytest.raises(rt.TensorRTError, match="no min/opt/max profile"):
        rt.profiles(bare)


def test_ort_trt_options_come_from_the_package(tmp_path, manifest):
    spec = manifest.fragments["t2i_decode"]
    o = rt.ort_trt_options(spec, tmp_path)
    assert o["trt_fp16_enable"] == "False" and o["trt_int8_enable"] == "False"
    assert o["trt_engine_cache_enable"] == "True" and o["trt_engine_cache_path"] == str(tmp_path)
    assert o["trt_profile_max_shapes"].startswith("tokens:8x1,codes:8x1,past_k_base_0:8x4x75x32")
    assert rt.ort_trt_options(replace(spec, precision="fp16"), tmp_path)["trt_fp16_enable"] == "True"
    q = rt.ort_trt_options(replace(spec, precision="int8-qdq"), tmp_path)
    assert q["trt_int8_enable"] == "True" and "trt_int8_calibration_table_name" not in q    # explicit Q/DQ
    t = rt.ort_trt_options(spec, tmp_path, calibration_table="cal/t2i_decode/calibration.flatbuffers")
    assert t["trt_int8_enable"] == "True" and t["trt_int8_calibration_table_name"].endswith("calibration.flatbuffers")
    with pytest.raises(rt.TensorRTError, match="Q/DQ"):
        rt.ort_trt_options(replace(spec, precision="int8-qdq"), tmp_path, calibration_table="x")


def test_session_gives_the_tensorrt_ep_its_options(tmp_path, manifest):
    from hiergen.runtime.backend import _with_options
    spec = manifest.fragments["t2i_decode"]
    assert _with_options("CPUExecutionProvider", DEFAULT_PACKAGE, spec) == "CPUExecutionProvider"
    name, opts = _with_options("TensorrtExecutionProvider", DEFAULT_PACKAGE, spec)
    assert name == "TensorrtExecutionProvider" and opts["trt_engine_cache_enable"] == "True"


# ---------------------------------------------------------------- a stand-in tensorrt module
def fake_trt(version="10.3.0", strongly_typed=True, flags=True):
    log = {"builds": 0, "shapes": {}, "flags": [], "network_flags": None}
    trt = types.SimpleNamespace(__version__=version)
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**({"STRONGLY_TYPED": 1} if strongly_typed else {}))
    trt.BuilderFlag = types.SimpleNamespace(**({"FP16": "FP16", "INT8": "INT8"} if flags else {}))
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            log["shapes"][name] = (tuple(lo), tuple(opt), tuple(hi))

    class Timing:
        def serialize(self):
            return b"timing"

    class Config:
        def set_memory_pool_limit(self, pool, n): pass
        def set_flag(self, f): log["flags"].append(f)
        def add_optimization_profile(self, p): pass
        def create_timing_cache(self, data): log["timing_in"] = data; return Timing()
        def set_timing_cache(self, tc, ignore): pass

    class Builder:
        def __init__(self, logger): pass
        def create_network(self, f): log["network_flags"] = f; return object()
        def create_builder_config(self): return Config()
        def create_optimization_profile(self): return Profile()
        def build_serialized_network(self, network, config):
            log["builds"] += 1
            return b"serialized engine"

    class OnnxParser:
        def __init__(self, network, logger): pass
        def parse_from_file(self, path): log["parsed"] = path; return True

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt, log


def test_build_flow_strongly_typed_profiles_timing_cache_and_reuse(tmp_path, monkeypatch, manifest):
    trt, log = fake_trt()
    monkeypatch.setattr(rt, "require_tensorrt", lambda: trt)
    cache = rt.EngineCache(tmp_path)
    path = rt.build_engine(DEFAULT_PACKAGE, manifest, "keyframe_decode", cache, gpu=("Orin", "8.7"))
    assert path.read_bytes() == b"serialized engine" and log["builds"] == 1
    assert log["network_flags"] == 1 << 1 and log["flags"] == []           # strongly typed: no precision flags
    assert log["shapes"] == rt.profiles(manifest.fragments["keyframe_decode"])
    assert cache.timing_cache.read_bytes() == b"timing"
    assert rt.build_engine(DEFAULT_PACKAGE, manifest, "keyframe_decode", cache, gpu=("Orin", "8.7")) == path
    assert log["builds"] == 1                                               # cached: not rebuilt
    assert log["timing_in"] == b""
    rt.build_engine(DEFAULT_PACKAGE, manifest, "keyframe_decode", cache, gpu=("NVIDIA H200", "9.0"))
    assert log["builds"] == 2 and log["timing_in"] == b"timing"            # another GPU: built, timing reused
    path.write_bytes(b"stale")
    rt.build_engine(DEFAULT_PACKAGE, manifest, "keyframe_decode", cache, gpu=("Orin", "8.7"))
    assert log["builds"] == 3 and path.read_bytes() == b"serialized engine"   # stale: rebuilt, never loaded


def test_precision_flags_only_where_the_version_has_them():
    old, _ = fake_trt("8.6.1", strongly_typed=False)
    assert rt.strongly_typed_flags(old) == 0
    assert rt.precision_flags(old, "fp16", strongly_typed=False) == ["FP16"]
    assert rt.precision_flags(old, "int8-qdq", strongly_typed=False) == ["INT8", "FP16"]
    trt10, _ = fake_trt("10.3.0")
    assert rt.precision_flags(trt10, "fp16", strongly_typed=True) == []
    trt11, _ = fake_trt("11.0.0", flags=False)
    assert rt.precision_flags(trt11, "fp16", strongly_typed=False) == []


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_says_what_to_install():
    r = subprocess.run([sys.executable, "-m", "hiergen.cli", "build-engine", str(DEFAULT_PACKAGE)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install tensorrt" in lines[0], r.stderr


def test_build_engine_refuses_int8_cpu_and_a_precision_the_package_lacks(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hiergen.cli", "build-engine", str(DEFAULT_PACKAGE), "--precision",
                        "fp16"], capture_output=True, text=True)
    assert r.returncode == 2 and "hiergen quantize" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "hiergen.cli", "build-engine", str(DEFAULT_PACKAGE), "--precision",
                        "int8-cpu"], capture_output=True, text=True)
    assert r.returncode == 2 and "int8-qdq" in r.stderr


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and an NVIDIA GPU")
def test_engine_runs_the_decode_graph(tmp_path, manifest):        # pragma: no cover - never run on the CPU VMs
    import numpy as np
    cache = rt.EngineCache(tmp_path)
    path = rt.build_engine(DEFAULT_PACKAGE, manifest, "t2i_prefill", cache)
    spec = manifest.fragments["t2i_prefill"]
    feeds = {t.name: np.zeros([1 if d == "batch" else 11 if d == "new_tokens" else d for d in t.shape], np.int64)
             for t in spec.inputs}
    out = rt.TrtEngine(path).run(feeds)
    assert out[spec.outputs[0].name].shape[-1] == manifest.model_config.image_vocab


class OrtEngine:
    """An engine with run(feeds) -> outputs over ONNX Runtime: stands in for TrtEngine on a machine without one."""

    def __init__(self, path):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.sess.get_outputs()]

    def run(self, feeds):
        want = {i.name for i in self.sess.get_inputs()}
        return dict(zip(self.names, self.sess.run(None, {k: v for k, v in feeds.items() if k in want})))


def test_engines_behind_the_step_model_interface_give_the_runtimes_tokens(manifest):
    """The engine path (EngineSession under OrtStepModel and the host arena, EngineCodec) with engines that run
    on ONNX Runtime makes the same video as the ONNX Runtime pipeline: the binding logic TrtEngine relies on."""
    from hiergen.runtime.engine_pipeline import engine_pipeline
    from hiergen.runtime.pipeline import Pipeline
    engines = {name: OrtEngine(DEFAULT_PACKAGE / spec.file) for name, spec in manifest.fragments.items()}
    pipe = engine_pipeline(DEFAULT_PACKAGE, engines)
    ref = Pipeline.load(DEFAULT_PACKAGE, backend="cpu", threads=1)
    for frames, seed in ((5, 0), (9, 1)):
        a = pipe.generate("a large red circle moves right slowly", frames=frames, seed=seed)
        b = ref.generate("a large red circle moves right slowly", frames=frames, seed=seed)
        assert (a.tokens == b.tokens).all() and (a.frames == b.frames).all()
    assert pipe.device == "OrtEngine"
