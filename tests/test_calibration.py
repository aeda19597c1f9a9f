"""calibration/: `hiergen quantize` on the shipped package (one calibration prompt, few samples, so it stays
fast), the manifest it writes, the runtime loading it unchanged, fp16 arenas, the teacher-forced agreement
check, and the error paths (unknown precision, already quantised, no calibration set, interruption)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")

from hiergen.calibration import quantize as q  # noqa: E402
from hiergen.calibration.capture import Tape, TapeRecorder, calibration_prompts, read_prompts, replay  # noqa: E402
from hiergen.runtime.manifest import Precision, PrecisionError  # noqa: E402
from hiergen.runtime.check import check_package  # noqa: E402
from hiergen.runtime.manifest import FRAGMENTS, Manifest  # noqa: E402
from hiergen.runtime.package import PackageError, load_manifest  # noqa: E402
from hiergen.runtime.pipeline import DEFAULT_PACKAGE, Pipeline  # noqa: E402

PROMPT = "a large red circle moves right slowly"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    return {p: q.quantize_package(DEFAULT_PACKAGE, root / p.value, p, n_prompts=1, keep=4)
            for p in (Precision.INT8_CPU, Precision.INT8_QDQ, Precision.FP16)}


def test_precision_is_one_enum_with_a_clear_error():
    assert Precision.parse("int8-qdq") is Precision.INT8_QDQ
    with pytest.raises(PrecisionError, match="choose one of fp16, int8-cpu, int8-qdq"):
        Precision.parse("int4")


def test_calibration_prompts_are_training_captions_drawn_by_seed():
    from hiergen.captions import parse
    from hiergen.synth import caption_for, seeds_for_split
    a, b = calibration_prompts(6, seed=0), calibration_prompts(6, seed=1)
    assert a == calibration_prompts(6, seed=0) and a != b and len(set(a)) == 6
    train = {str(caption_for(s)) for s in seeds_for_split("train", 2000)}
    assert set(a) <= train and not any(parse(p).held_out for p in a + b)


def test_calibration_prompts_hold_every_caption_word_first():
    from hiergen.calibration.capture import uncovered
    from hiergen.captions import COLOURS, SHAPES
    for seed in range(3):
        assert uncovered(calibration_prompts(8, seed)) == []                 # 8 colours: one prompt each
    assert uncovered(calibration_prompts(2, 0)) != []
    assert set(uncovered(["a small red circle moves left slowly"])) >= (set(COLOURS) - {"red"}) | set(SHAPES[1:])


def _ln_matmul_graph(gain: np.ndarray, w: np.ndarray, extra_reader: bool = False):
    """x [B, C] -> LayerNorm(gain, 0.1) -> MatMul w -> y (and, with extra_reader, the LayerNorm's output + 1)."""
    from onnx import TensorProto, helper, numpy_helper
    c, n = w.shape
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["h", "w"], ["y"], name="mm")]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", n])]
    if extra_reader:
        nodes.append(helper.make_node("Add", ["h", "g"], ["z"], name="add"))
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["B", c]))
    inits = [numpy_helper.from_array(gain.astype(np.float32), "g"),
             numpy_helper.from_array(np.full(c, 0.1, np.float32), "b"), numpy_helper.from_array(w, "w")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", c])], outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_smoothing_keeps_the_float_function_and_evens_out_the_channels():
    import onnxruntime as ort
    from hiergen.calibration.smooth import activation_maxima, smooth, smoothable, smoothing_scales
    rng = np.random.default_rng(0)
    gain = np.ones(16)
    gain[3] = 40.0                                                # one outlier channel, as LayerNorm gains make
    w = rng.normal(size=(16, 8)).astype(np.float32)
    proto = _ln_matmul_graph(gain, w)
    feeds = [{"x": rng.normal(size=(4, 16)).astype(np.float32)} for _ in range(6)]
    before = activation_maxima(proto, feeds, ["g"])["g"]
    scales = smoothing_scales({"f": ("m", proto, set())}, {"f": feeds})
    smoothed = type(proto)()
    smoothed.CopyFrom(proto)
    assert smooth(smoothed, scales["m"]) == 1
    after = activation_maxima(smoothed, feeds, ["g"])["g"]
    assert after.max() / after.min() < 0.5 * before.max() / before.min()
    run = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]) for p in (proto, smoothed)]
    for f in feeds:
        a, b = (r.run(None, f)[0] for r in run)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    # a LayerNorm read by anything but weight MatMuls, or feeding a node kept float, is left alone
    assert smoothable(_ln_matmul_graph(gain, w, extra_reader=True)) == {}
    assert smoothable(proto, keep_float={"mm"}) == {} and list(smoothable(proto)) == ["g"]


def test_read_prompts_refuses_held_out_pairs(tmp_path):
    from hiergen.captions import all_captions
    held = next(str(c) for c in all_captions() if c.held_out)
    f = tmp_path / "p.txt"
    f.write_text(f"# calibration\n{PROMPT}\n\n")
    assert read_prompts(f) == [PROMPT]
    f.write_text(f"{PROMPT}\n{held}\n")
    with pytest.raises(ValueError, match="held-out"):
        read_prompts(f)


@pytest.mark.parametrize("precision", list(Precision)[1:], ids=lambda p: p.value)
def test_quantized_package_checks_and_records_its_making(packages, precision):
    pkg = packages[precision]
    report = check_package(pkg)                                    # hashes, ONNX Runtime, ONNX checker
    m: Manifest = report["manifest"]
    assert report["precision"] == precision.value == m.precision
    assert {f.precision for f in m.fragments.values()} == {precision.value}
    raw = json.loads((pkg / "manifest.json").read_text())
    assert Manifest.from_dict(raw).to_dict() == raw                # round trip, quantization block included
    assert m.quantization.source_package_sha256 == q.package_sha256(DEFAULT_PACKAGE)
    src = load_manifest(DEFAULT_PACKAGE)
    assert m.source_sha256 == src.source_sha256 and m.plan == src.plan
    if precision.int8:
        cal = m.quantization.calibration
        assert cal.split == "train" and cal.prompts == tuple(calibration_prompts(1, 0))
        assert ("smoothed" in m.quantization.method) == (q.SMOOTHING[precision] > 0)
        assert set(cal.samples) == set(FRAGMENTS) and all(n > 0 for n in cal.samples.values())


@pytest.mark.parametrize("precision", list(Precision)[1:], ids=lambda p: p.value)
def test_the_runtime_loads_it_unchanged(packages, precision):
    pipe = Pipeline.load(packages[precision], backend="cpu", threads=1)
    v = pipe.generate(PROMPT, frames=5, seed=0)
    assert v.frames.shape == (5, 64, 64, 3) and v.frames.dtype == np.uint8


def test_int8_weights_are_at_most_35_percent(packages):
    fp32 = load_manifest(DEFAULT_PACKAGE).weights.bytes
    for p in (Precision.INT8_CPU, Precision.INT8_QDQ):
        assert load_manifest(packages[p]).weights.bytes <= 0.35 * fp32, p


def test_int8_qdq_is_symmetric_and_carries_tensorrt_tables(packages, tmp_path):
    import onnx
    from onnx import numpy_helper
    pkg = packages[Precision.INT8_QDQ]
    m = load_manifest(pkg)
    proto = onnx.load(str(pkg / m.fragments["keyframe_decode"].file))
    inits = {t.name: t for t in proto.graph.initializer}
    zps = [n.input[2] for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zps
    for z in zps:
        a = numpy_helper.to_array(inits[z])
        assert a.dtype == np.int8 and not a.any(), z            # int8, zero point 0: symmetric
    assert set(m.quantization.tables) == set(FRAGMENTS)
    table = pkg / m.quantization.tables["t2i_decode"]["file"]
    table.write_bytes(table.read_bytes() + b"x")
    with pytest.raises(PackageError, match="calibration"):
        check_package(pkg, onnx_checker=False)
    table.write_bytes(table.read_bytes()[:-1])


def test_fp16_caches_arenas_and_logits(packages):
    pkg = packages[Precision.FP16]
    m = load_manifest(pkg)
    dec = m.fragments["interp_decode"]
    assert {t.dtype for t in dec.inputs[2:]} == {"float16"} and dec.outputs[0].dtype == "float32"   # logits stay
    pipe = Pipeline.load(pkg, backend="cpu", threads=1)
    arena = pipe.models["interp"].new_cache(2)
    assert arena.kv.dtype == np.float16 and arena.blocks.dtype == np.float16 and arena.logits.dtype == np.float32


def test_teacher_forced_agreement(packages):
    """The fp32 package against itself agrees everywhere; fp16 nearly so, with small logit differences."""
    ref = Pipeline.load(DEFAULT_PACKAGE, backend="cpu", threads=1)
    tape = Tape("keyframe")
    inner = ref.models["keyframe"]
    ref.models["keyframe"] = TapeRecorder(inner, tape)
    ref.generate(PROMPT, frames=5, seed=3)
    same = replay(tape, inner)["keyframe"]
    rows = 2 if ref.plan.guidance["keyframe"] != 1.0 else 1      # a guided stage's text-free branch is a row too
    assert same["top1_agree"] == same["positions"] == rows * (4 * 64 + 1) and same["max_logit_diff"] == 0.0
    fp16 = Pipeline.load(packages[Precision.FP16], backend="cpu", threads=1)
    r = replay(tape, fp16.models["keyframe"])["keyframe"]
    print(f"fp16 keyframe: top-1 {r['top1_agree']}/{r['positions']}, max |logit diff| {r['max_logit_diff']:.4f}")
    assert r["top1_agree"] >= 0.95 * r["positions"] and 0 < r["max_logit_diff"] < 0.2


def test_an_already_quantised_package_is_refused(packages, tmp_path):
    with pytest.raises(PrecisionError, match="already quantised"):
        q.quantize_package(packages[Precision.INT8_CPU], tmp_path / "again", "fp16")
    assert not (tmp_path / "again").exists()


def test_fp32_unknown_existing_and_empty_calibration_are_refused(tmp_path, packages):
    with pytest.raises(PrecisionError, match="fp32 is the exported package"):
        q.quantize_package(DEFAULT_PACKAGE, tmp_path / "a", "fp32")
    with pytest.raises(PrecisionError, match="unknown precision"):
        q.quantize_package(DEFAULT_PACKAGE, tmp_path / "a", "bf16")
    with pytest.raises(PrecisionError, match="exists"):
        q.quantize_package(DEFAULT_PACKAGE, packages[Precision.FP16], "fp16")
    with pytest.raises(PrecisionError, match="no calibration set"):
        q.quantize_package(DEFAULT_PACKAGE, tmp_path / "a", "int8-cpu", prompts=[])
    with pytest.raises(PrecisionError, match="between 0 .off. and 1"):
        q.quantize_package(DEFAULT_PACKAGE, tmp_path / "a", "int8-cpu", smooth_alpha=2.0)
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


def test_a_calibration_set_missing_a_graph_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(q, "capture", lambda *a, **k: {"t2i_prefill": [{}]})
    with pytest.raises(PrecisionError, match="no inputs for"):
        q.quantize_package(DEFAULT_PACKAGE, tmp_path / "a", "int8-qdq", prompts=[PROMPT])
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    real, calls = q.convert_fragment, []

    def convert(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(q, "convert_fragment", convert)
    with pytest.raises(q.QuantizeInterrupted, match="nothing was written"):
        q.quantize_package(DEFAULT_PACKAGE, tmp_path / "fp16", "fp16")
    assert list(tmp_path.iterdir()) == []                      # no package, no temporary folder


def test_cli_errors_are_one_line(tmp_path):
    def run(*argv):
        r = subprocess.run([sys.executable, "-m", "hiergen.cli", *argv], capture_output=True, text=True)
        return r.returncode, r.stderr.strip().splitlines()
    rc, err = run("quantize", str(DEFAULT_PACKAGE), "--precision", "int4", "--out", str(tmp_path / "x"))
    assert rc == 2 and len(err) == 1 and "fp16, int8-cpu, int8-qdq" in err[0]
    rc, err = run("quantize", str(DEFAULT_PACKAGE), "--precision", "int8-cpu", "--out", str(tmp_path / "x"),
                  "--calibration-prompts", str(tmp_path / "missing.txt"))
    assert rc == 2 and len(err) == 1 and "--calibration-prompts" in err[0]
    assert not (tmp_path / "x").exists()


def _bench_result():
    stage = lambda ms: {"model": "t2i", "batch": 1, "stage_ms": 50.0, "decode_steps": 64,   # noqa: E731
                        "decode_step_ms": ms, "bandwidth_bound_ms": 0.4, "prefill_ms": 3.0, "tokens_per_s": 900.0}
    backends = {"cpu": {"device": "CPUExecutionProvider", "video_latency_s": 2.0, "peak_rss_mb": 300.0,
                        "stages": {"t2i": stage(0.30)}},
                "cpu int8-cpu": {"device": "CPUExecutionProvider", "video_latency_s": 1.6, "peak_rss_mb": 290.0,
                                 "stages": {"t2i": stage(0.20)}}}
    from hiergen.tools.bench import _ratios
    return {"frames": 33, "prompt": PROMPT, "seed": 0, "runs": 2, "rounds": 1, "threads": None, "machine": "test",
            "copy_bandwidth_gbs": 10.0, "backends": backends,
            "video_latency_s": {k: b["video_latency_s"] for k, b in backends.items()},
            "packages": {"cpu": {"package": "a", "precision": "fp32", "weights": 100, "files": 120},
                         "cpu int8-cpu": {"package": "b", "precision": "int8-cpu", "weights": 35, "files": 50}},
            "vs_main": {"cpu int8-cpu": _ratios(backends["cpu"], backends["cpu int8-cpu"])}}


def test_bench_compare_table_and_precision_picture(tmp_path):
    from hiergen.calibration.report import picture
    from hiergen.tools.bench import markdown
    r = _bench_result()
    assert r["vs_main"]["cpu int8-cpu"] == pytest.approx({"video": 1.25, "t2i": 1.5})
    text = markdown(r)
    assert "| cpu int8-cpu | int8-cpu | 0.00 | 35% | 0.00 | 1.25x | 1.50x |" in text
    agreement = {"packages": {"b": {"precision": "int8-cpu", "stages": {"t2i": {"top1": 0.97}}}}}
    out = tmp_path / "p.png"
    picture(r, agreement, None, str(out))
    import cv2
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > img.shape[0] > 100


def test_precision_picture_bars_are_the_runtime_steps_and_ticks_the_isolated_ones(packages, tmp_path):
    from hiergen.calibration.report import picture, speed
    r = _bench_result()
    steps = {"speedup": {str(packages[Precision.INT8_CPU]): {"t2i": 0.9}}}
    groups, series, _, _, _, marks = speed(r, steps)
    assert groups == ["t2i", "video", "weights"]
    assert series["int8-cpu"][:2] == pytest.approx([1.5, 1.25]) and marks == {"int8-cpu": [0.9]}
    picture(r, None, {"hierarchical": {"accuracy": {m: 0.9 for m in ("colour", "shape", "size", "motion")},
                                       "one_object_rate": 1.0}}, str(tmp_path / "p.png"), steps)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_exact_tables_in_fp16_change_no_output():
    """The int8 packages keep the attention mask tables (0 and -1e4) in float16 with a Cast after the lookup:
    half the bytes, bit-identical outputs."""
    import onnx
    import onnxruntime as ort
    m = load_manifest(DEFAULT_PACKAGE)
    spec = m.fragments["keyframe_decode"]
    proto = onnx.load(str(DEFAULT_PACKAGE / spec.file))
    saved = q.halve_exact_tables(half := onnx.load(str(DEFAULT_PACKAGE / spec.file)))
    assert saved > 100_000
    rng = np.random.default_rng(0)
    feeds = {t.name: (rng.standard_normal([2 if d == "batch" else d for d in t.shape]).astype(np.float32)
                      if t.dtype == "float32" else np.full((2, 1), m.model_config.text_len + 70, np.int64))
             for t in spec.inputs}
    run = lambda p: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)  # noqa: E731
    for a, b in zip(run(proto), run(half)):
        assert np.array_equal(a, b)


def test_isolated_step_timing_covers_every_stage_at_its_batch(packages):
    """calibration/speed.py times each stage's decode graph at the batch the plan runs it (guided stages
    doubled), and its bound outputs are the graph's outputs for the captured feed."""
    from hiergen.calibration import speed
    from hiergen.runtime.package import open_package
    from hiergen.runtime.plan import stage_batches
    stages = stage_batches(open_package(DEFAULT_PACKAGE).plan)
    feeds = speed.step_inputs(str(DEFAULT_PACKAGE), stages)
    assert {s: f["tokens"].shape[0] for s, f in feeds.items()} == {s: b for s, (_, b) in stages.items()}
    sess, spec = speed.decode_session(str(DEFAULT_PACKAGE), *stages["keyframe"])
    io, _, outputs = speed.bound(sess, spec, feeds["keyframe"])
    expected = sess.run(None, {t.name: feeds["keyframe"][t.name] for t in spec.inputs})
    first = outputs[sess.get_outputs()[0].name]
    first[...] = 0
    sess.run_with_iobinding(io)
    assert np.array_equal(first, expected[0]) and np.abs(first).max() > 0
    r = speed.time_steps([str(DEFAULT_PACKAGE), str(packages[Precision.INT8_CPU])], steps=speed.BLOCK)
    assert set(r["median_ms"][str(DEFAULT_PACKAGE)]) == set(stages)
    assert all(v > 0 for v in r["speedup"][str(packages[Precision.INT8_CPU])].values())


def test_step_profile_counts_the_optimised_graphs_nodes_per_op(packages):
    from hiergen.calibration import speed
    r = speed.profile_ops([str(DEFAULT_PACKAGE), str(packages[Precision.INT8_CPU])], "t2i", steps=3)
    fp32, int8 = (r["ops"][str(p)] for p in (DEFAULT_PACKAGE, packages[Precision.INT8_CPU]))
    assert "DynamicQuantizeMatMul" in int8 and "DynamicQuantizeMatMul" not in fp32       # int8-cpu decode: dynamic
    assert all(v["us"] > 0 and v["nodes"] > 0 for v in fp32.values())
    assert "| all |" in speed.profile_markdown(r)
    with pytest.raises(ValueError, match="interp1"):
        speed.profile_ops([str(DEFAULT_PACKAGE)], "interp9", steps=1)
