"""`hiergen bench`: step labelling, bytes per step, the report, and one real run of the CPU worker."""
import math
import time

import numpy as np
import pytest

from hiergen.cli import main
from hiergen.tools import bench
from hiergen.runtime.orchestrator import Request, generate
from hiergen.runtime.package import load_manifest
from hiergen.runtime.pipeline import DEFAULT_PACKAGE
from hiergen.runtime.sampler import SamplerOptions
from test_orchestrator import PLAN, TOK, models

PROMPT = "a small red circle moves left quickly"
P = 16                                          # the fake models' 4x4 grid


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(DEFAULT_PACKAGE)


def timed_run(frames, seed=0, **user):
    """A generation on fake models wrapped as the bench worker wraps them: (result, step log)."""
    log = []
    ms = {k: bench.Timed(m, k, log) for k, m in models().items()}
    res = generate(Request(PROMPT, TOK, 1, frames, SamplerOptions(seed=seed), **user), ms, PLAN)
    return res, log


# ------------------------------------------------------------ _stage_of
@pytest.mark.parametrize("frames", [5, 9, 17, 33])
def test_stage_of_labels_every_step_with_its_stage(frames):
    res, log = timed_run(frames)
    stages = list(res.timings)                  # what summarise() passes: the stages in run order
    labelled = bench._stage_of(log, stages)
    assert [step for _, step in labelled] == log, "every step labelled once, in order"
    want = {"t2i": 1 + P, "keyframe": 1 + 4 * P, "interp1": 1 + 2 * P, "interp2": 1 + 2 * P, "interp3": 1 + 2 * P}
    got = {}
    for stage, (model, batch, new, _) in labelled:
        assert model == bench.STAGE_MODEL[stage]
        got.setdefault(stage, []).append((batch, new))
    assert {k: len(v) for k, v in got.items()} == {s: want[s] for s in stages}
    for stage, steps in got.items():
        assert steps[0][1] > 1 and all(n == 1 for _, n in steps[1:]), f"{stage}: one prefill, then decodes"
    # interpolation round r batches all 2^r triples (no guidance on interp in PLAN)
    for r in range(1, len(stages) - 1):
        assert {b for b, _ in got[f"interp{r}"]} == {2 ** r}


def test_stage_of_with_user_keyframes_starts_at_the_first_round_run():
    full, _ = timed_run(33, seed=1)
    res, log = timed_run(33, seed=1, keyframes=full.tokens[::4])       # 9 keyframes: rounds 2 and 3 only
    assert list(res.timings) == ["interp2", "interp3"]
    labelled = bench._stage_of(log, list(res.timings))
    assert [s for s, _ in labelled] == ["interp2"] * (1 + 2 * P) + ["interp3"] * (1 + 2 * P)


def test_summarise_counts_decode_steps_per_video(manifest):
    runs = [timed_run(17, seed=s) for s in (0, 0)]
    report = {"device": "fake", "peak_rss_mb": 1.0, "torch_loaded": False,
              "videos": [{"latency_s": 1.0 + i, "stages": r.timings} for i, (r, _) in enumerate(runs)],
              "steps": [log for _, log in runs]}
    s = bench.summarise(report, manifest, bandwidth=1e10)
    assert s["video_latency_s"] == 1.5 and s["latencies_s"] == [1.0, 2.0]
    assert {k: v["decode_steps"] for k, v in s["stages"].items()} == {
        "t2i": P, "keyframe": 4 * P, "interp1": 2 * P, "interp2": 2 * P}
    assert {k: v["batch"] for k, v in s["stages"].items()} == {"t2i": 2, "keyframe": 2, "interp1": 2, "interp2": 4}
    for k, v in s["stages"].items():
        assert v["bandwidth_bound_ms"] == pytest.approx(
            1000 * bench.step_bytes(manifest, bench.STAGE_MODEL[k], v["batch"]) / 1e10)


def test_bound_uses_the_bandwidth_measured_around_the_workers(manifest):
    r, log = timed_run(5, seed=0)
    report = {"device": "fake", "peak_rss_mb": 1.0, "torch_loaded": False,
              "videos": [{"latency_s": 1.0, "stages": r.timings}] * 3, "steps": [log] * 3,
              "copy_bandwidth": [2e10, 5e9, 1e10]}
    s = bench.summarise(report, manifest, bandwidth=1e12)       # the start-of-run figure is not used
    assert s["copy_bandwidth_gbs"] == 10.0 and s["copy_bandwidths_gbs"] == [20.0, 5.0, 10.0]
    k = s["stages"]["keyframe"]
    assert k["bandwidth_bound_ms"] == pytest.approx(1000 * bench.step_bytes(manifest, "keyframe", k["batch"]) / 1e10)
    assert "median copy bandwidth measured just before and after its workers (5.0-20.0 GB/s)" in bench.markdown(
        {"frames": 5, "prompt": "p", "seed": 0, "runs": 3, "machine": "m", "copy_bandwidth_gbs": 1000.0,
         "threads": None, "video_latency_s": {"cpu": 1.0}, "backends": {"cpu": s}})


def test_rounds_merge_into_one_report():
    a = {"backend": "cpu", "device": "d", "videos": [1, 2], "steps": [[], []], "copy_bandwidth": [1.0, 2.0],
         "tokens": [[1, 2]], "peak_rss_mb": 100.0, "torch_loaded": False}
    b = {**a, "videos": [3], "steps": [[]], "copy_bandwidth": [3.0], "peak_rss_mb": 120.0}
    m = bench.merge_reports([a, b])
    assert m["videos"] == [1, 2, 3] and m["copy_bandwidth"] == [1.0, 2.0, 3.0] and m["peak_rss_mb"] == 120.0
    with pytest.raises(RuntimeError, match="different tokens"):
        bench.merge_reports([a, {**b, "tokens": [[1, 3]]}])


# ------------------------------------------------------------ step_bytes
def arena_bytes(spec, batch):
    """Every past tensor of the step graph's KV cache at `batch`, counted from the manifest's own shapes."""
    inputs = {t.name: t for t in spec.inputs}
    total = 0
    for past, new in spec.kv_cache.pairs:
        t = inputs[past]
        dims = [batch if d == "batch" else d for d in t.shape]
        assert all(isinstance(d, int) for d in dims), f"{past} has a dynamic axis other than batch: {t.shape}"
        total += math.prod(dims) * np.dtype(t.dtype).itemsize
    return total


@pytest.mark.parametrize("model", ["t2i", "keyframe", "interp"])
def test_step_bytes_is_weights_plus_the_kv_arena(manifest, model):
    spec = manifest.fragment(model, "decode")                 # the graph a decode step runs
    assert manifest.fragment(model, "step").decode == spec.name
    read = spec.read_bytes
    # every weight matrix is read whole; lookup tables a row per sequence, far less than their size
    assert 0 < read["per_sequence"] < read["fixed"] < spec.weight_bytes
    for batch in (1, 2, 8):
        weights = read["fixed"] + batch * read["per_sequence"]
        assert bench.step_bytes(manifest, model, batch) == weights + arena_bytes(spec, batch)
    # linear in the batch, and the fixed weights alone at batch 0
    b1, b2, b5 = (bench.step_bytes(manifest, model, b) for b in (1, 2, 5))
    assert b5 - b2 == 3 * (b2 - b1) > 0
    assert bench.step_bytes(manifest, model, 0) == read["fixed"]
    # attention-base reads a frame-local block (text + one frame), attention-plus every slot
    cfg = manifest.model_config
    block, seq = cfg.text_len + cfg.grid ** 2, cfg.text_len + cfg.n_frames * cfg.grid ** 2
    # and the interpolation model's attention-plus a Swin window's block (text + 5 frames x 4 x 4 slots)
    window_block = cfg.text_len + cfg.n_frames * cfg.window ** 2
    local, windowed = set(spec.kv_cache.frame_local), dict(spec.kv_cache.window_local)
    for past in spec.kv_cache.past_names:
        assert ("_base_" in past) == (past in local)
        assert (past in windowed) == (model == "interp" and "_plus_" in past)
        assert spec.input(past).shape[2] == (block if past in local else window_block if past in windowed else seq)
    t2i = arena_bytes(manifest.fragment("t2i", "decode"), 1)
    plus = {"t2i": 0, "keyframe": seq, "interp": window_block}[model]
    assert arena_bytes(spec, 1) == t2i * (1 + plus / block)


def test_step_bytes_adds_the_fragments_read_bytes(manifest):
    from dataclasses import replace
    spec = replace(manifest.fragment("keyframe", "step"), decode=None, read_bytes={"fixed": 12345, "per_sequence": 10})
    assert bench.step_bytes(replace(manifest, fragments={spec.name: spec}), "keyframe", 3) == 12375 + arena_bytes(spec, 3)
    older = replace(spec, read_bytes={}, weight_bytes=999)              # a package from before read_bytes
    assert bench.step_bytes(replace(manifest, fragments={spec.name: older}), "keyframe", 3) == 999 + arena_bytes(spec, 3)


def test_manifest_weight_bytes_are_the_step_graphs_initializers(manifest):
    onnx = pytest.importorskip("onnx")
    from onnx.helper import tensor_dtype_to_np_dtype
    for name in (f"{m}_{g}" for m in ("t2i", "keyframe", "interp") for g in ("step", "decode")):
        spec = manifest.fragments[name]
        proto = onnx.load(str(DEFAULT_PACKAGE / spec.file), load_external_data=False)
        nbytes = sum(math.prod(t.dims) * np.dtype(tensor_dtype_to_np_dtype(t.data_type)).itemsize
                     for t in proto.graph.initializer)
        assert spec.weight_bytes == nbytes > 0, name


# ------------------------------------------------------------ markdown
def fake_result():
    stage = {"batch": 2, "stage_ms": 100.0, "decode_steps": 64, "decode_step_ms": 1.5, "bandwidth_bound_ms": 0.5,
             "prefill_ms": 3.0, "tokens_per_s": 640.0}
    backend = {"device": "dev", "video_latency_s": 2.0, "peak_rss_mb": 300.0,
               "stages": {"t2i": dict(stage), "keyframe": {**stage, "batch": 1}}}
    return {"prompt": PROMPT, "frames": 5, "seed": 0, "runs": 3, "threads": None, "machine": "m",
            "copy_bandwidth_gbs": 10.0, "backends": {"cpu": dict(backend), "torch": {**backend, "video_latency_s": 4.0}},
            "video_latency_s": {"cpu": 2.0, "torch": 4.0}, "tokens_differ_from_torch": {"cpu": 3},
            "tokens_per_video": 320, "generate_peak_rss_mb": 250.0}


def test_markdown_has_a_row_per_backend_and_per_stage():
    text = bench.markdown(fake_result())
    lines = text.splitlines()
    top = [ln for ln in lines if ln.startswith("| cpu (") or ln.startswith("| torch (")]
    assert len(top) == 2
    assert "| 2.000 | 2.00x | 300 |" in top[0] and "| 4.000 | 1.00x |" in top[1]
    for name in ("cpu", "torch"):
        section = lines[lines.index(f"## {name}"):]
        rows = [ln for ln in section[3:] if ln.startswith("| ")][:2]
        assert [r.split("|")[1].strip() for r in rows] == ["t2i", "keyframe"]
        assert "| 1.50 | 0.50 | 3.00 |" in rows[0]                           # step, bound, step / bound
    assert "3 of 320 tokens differ" in text and "peak RSS 250 MB" in text


def test_rounds_give_each_a_step_over_bound(manifest):
    """A round's ratio divides its own median step by the bandwidth measured around its own worker."""
    r, log = timed_run(5, seed=0)
    rep = {"device": "fake", "peak_rss_mb": 1.0, "torch_loaded": False,
           "videos": [{"latency_s": 1.0, "stages": r.timings}], "steps": [log]}
    fast, slow = {**rep, "copy_bandwidth": [1e10, 1e10]}, {**rep, "copy_bandwidth": [5e9, 5e9]}
    ratios = bench.round_ratios([fast, slow], manifest, bandwidth=1e12)
    assert set(ratios) == {"t2i", "keyframe"}
    for stage, (a, b) in ratios.items():
        assert b == pytest.approx(a / 2) and a > 0     # the same steps against half the bandwidth: half the ratio


def test_markdown_shows_the_rounds_spread_only_with_rounds():
    r = fake_result()
    r["backends"]["cpu"]["stages"] = {k: dict(v) for k, v in r["backends"]["cpu"]["stages"].items()}  # its own
    r["backends"]["cpu"]["stages"]["t2i"]["step_bound_by_round"] = [2.5, 3.5, 3.0]
    text = bench.markdown(r)
    cpu = text[text.index("## cpu"):text.index("## torch")]
    assert "| step / bound, rounds |" in cpu and "| 3.00 | 2.50-3.50 | 3.0 |" in cpu
    assert "| keyframe | 1 | 100 | 64 | 1.50 | 0.50 | 3.00 | - | 3.0 |" in cpu
    torch = text[text.index("## torch"):]
    assert "rounds |" not in torch                     # no rounds recorded: no column


def test_markdown_without_the_reference():
    r = fake_result()
    del r["backends"]["torch"], r["video_latency_s"]["torch"], r["tokens_differ_from_torch"]
    text = bench.markdown(r)
    assert "| cpu (dev) | 2.000 | - | 300 |" in text and "## torch" not in text


# ------------------------------------------------------------ measurement
def test_copy_bandwidth_is_plausible():
    bw = bench.copy_bandwidth(mbytes=16, repeats=2)
    assert math.isfinite(bw) and 1e8 < bw < 1e13                          # 0.1 GB/s .. 10 TB/s


def test_bench_end_to_end_cpu():
    t = time.perf_counter()
    r = bench.bench(None, ["cpu"], None, None, runs=1, frames=5, prompt=PROMPT, seed=0, threads=1, rss=True,
                    rounds=2)
    took = time.perf_counter() - t
    assert set(r["video_latency_s"]) == {"cpu"} and 0 < r["video_latency_s"]["cpu"] < took
    assert r["runs"] == 2 and len(r["backends"]["cpu"]["latencies_s"]) == 2          # one video per round
    assert len(r["backends"]["cpu"]["copy_bandwidths_gbs"]) == 4                   # before and after each worker
    for s in r["backends"]["cpu"]["stages"].values():
        assert len(s["step_bound_by_round"]) == 2 and all(v > 0 for v in s["step_bound_by_round"])
    assert set(r["decode_step_ms"]) == set(r["bandwidth_bound_ms"]) == {"t2i", "keyframe"}
    for d in (r["decode_step_ms"], r["bandwidth_bound_ms"]):
        assert all(math.isfinite(v) and v > 0 for v in d.values()), d
    assert set(r["peak_rss_mb"]) == {"cpu", "hiergen generate"}
    assert all(0 < v < 2000 for v in r["peak_rss_mb"].values()), r["peak_rss_mb"]
    cpu = r["backends"]["cpu"]
    assert cpu["torch_loaded"] is False
    grid_tokens = load_manifest(DEFAULT_PACKAGE).model_config.grid ** 2
    assert cpu["stages"]["t2i"]["decode_steps"] == grid_tokens
    assert cpu["stages"]["keyframe"]["decode_steps"] == 4 * grid_tokens
    assert "speedup_vs_torch" not in r and "tokens_differ_from_torch" not in r
    assert "| cpu (" in bench.markdown(r)


def test_a_failing_worker_says_which_backend():
    with pytest.raises(RuntimeError, match="bench worker 'nonsense' failed"):
        bench._run_worker("nonsense", {"model": str(DEFAULT_PACKAGE), "threads": 1, "runs": 1, "frames": 5,
                                       "prompt": PROMPT, "seed": 0})


@pytest.mark.parametrize("runs", ["0", "-1"])
def test_cli_refuses_no_timed_runs_before_any_work(runs, monkeypatch, capsys):
    def refuse(*a, **k):
        raise AssertionError("bench started before --runs was checked")
    monkeypatch.setattr(bench, "bench", refuse)
    assert main(["bench", "--backends", "cpu", "--runs", runs]) == 2
    assert "--runs needs at least 1" in capsys.readouterr().err
