"""`hiergen bench`: every stage and backend of one model in one run, against the PyTorch reference.

    hiergen bench --runs 2 --rounds 3 --json docs/bench/cpu.json --markdown docs/bench/cpu.md

Each backend runs in its own worker process (`python -m hiergen.tools.bench
--worker ...`), one after the other, so their peak resident memory is their own
and the ONNX Runtime worker never has torch loaded. A worker loads its
pipeline, generates one warm-up video, then `runs` timed videos of the same
prompt and seed, and reports per stage the wall time, the sampled tokens per
second and every step's time by (model, batch, new tokens).

Figures:
- video_latency_s: median whole-video latency (tokens and pixels, no file IO);
- speedup_vs_torch: the PyTorch reference's median over the backend's;
- decode_step_ms: median time of a decode step (one new token per sequence) per stage;
- bandwidth_bound_ms: the bytes such a step must read (the decode graph's
  weights, a lookup table one row per sequence, plus its KV arena at that
  batch) over the machine's copy bandwidth
  (bytes copied per second by a large numpy copy, the better of one thread
  and the bench's threads; see copy_bandwidth), the median of measurements
  taken just before and after each of the backend's workers: no decode step
  can beat it;
- step_bound_by_round (per stage): each round's decode step over its own bound, the spread
  a drifting machine puts into one run;
- peak_rss_mb: the workers' peak resident memory, and that of a plain
  `hiergen generate` run writing an MP4 (the product, base install).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from hiergen.runtime.manifest import Manifest

STAGE_MODEL = {"t2i": "t2i", "keyframe": "keyframe", "interp1": "interp", "interp2": "interp", "interp3": "interp"}


# ------------------------------------------------------------ measurement helpers
def copy_bandwidth(mbytes: int = 256, repeats: int = 5, threads: int = 1) -> float:
    """Bytes copied per second by a large numpy copy split over `threads` threads, best of `repeats`.

    Counted as memcpy benchmarks do (N bytes copied / t); STREAM's convention
    counts the reads and the writes (2N / t). On this 2-core machine one
    thread's pure read (a numpy sum) reaches about this N / t, so it is the
    rate at which a step can read its weights and cache.
    """
    from concurrent.futures import ThreadPoolExecutor
    a = np.ones(mbytes << 18, np.float32)          # mbytes MiB
    b = np.empty_like(a)
    parts = np.array_split(np.arange(len(a)), threads)
    spans = [(int(p[0]), int(p[-1]) + 1) for p in parts if len(p)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(lambda s: np.copyto(b[s[0]:s[1]], a[s[0]:s[1]]), spans))   # numpy drops the GIL
            best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def machine_bandwidth(threads: int | None, repeats: int = 5) -> float:
    """copy_bandwidth, the better of one thread and `threads` (default all cores)."""
    return max(copy_bandwidth(repeats=repeats, threads=1),
               copy_bandwidth(repeats=repeats, threads=threads or os.cpu_count() or 1))


def machine() -> str:
    """CPU model and core count (Linux /proc/cpuinfo; the platform string elsewhere)."""
    import platform
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timed:
    """A StepModel wrapper that records (batch, new tokens, seconds) of every step."""

    def __init__(self, inner, name: str, log: list):
        self.inner, self.name, self.log = inner, name, log
        self.text_len, self.grid, self.image_vocab = inner.text_len, inner.grid, inner.image_vocab

    def new_cache(self, batch):
        return self.inner.new_cache(batch)

    def prefill(self, tokens, codes, cache):
        return self._timed(self.inner.prefill, tokens, codes, cache)

    def decode(self, tokens, codes, cache):
        return self._timed(self.inner.decode, tokens, codes, cache)

    def _timed(self, run, tokens, codes, cache):
        t = time.perf_counter()
        out = run(tokens, codes, cache)
        self.log.append((self.name, int(tokens.shape[0]), int(tokens.shape[1]), time.perf_counter() - t))
        return out


# ------------------------------------------------------------ worker (one backend, own process)
def worker(backend: str, cfg: dict) -> dict:
    """Load one backend's pipeline, warm up, time `runs` videos; a JSON-able report."""
    if backend == "clib":                          # the C library (libhiergen) through ctypes
        from hiergen.tools.bench_clib import worker as clib_worker
        return {**clib_worker(cfg), "peak_rss_mb": peak_rss_mb()}
    if backend == "torch":
        import torch
        torch.set_num_threads(cfg["threads"] or os.cpu_count() or 1)
        from hiergen.training.generate import ReferencePipeline
        from hiergen.runtime.package import load_manifest
        plan = load_manifest(cfg["model"]).plan       # the package's plan, for the same loop
        pipe = ReferencePipeline.load(cfg["checkpoints"], cfg["vqvae"], plan=plan)
        device = "torch " + torch.__version__
    else:
        from hiergen.runtime.pipeline import Pipeline
        pipe = Pipeline.load(cfg["model"], backend=backend, threads=cfg["threads"])
        device = pipe.device
    log: list = []
    pipe.models = {k: Timed(m, k, log) for k, m in pipe.models.items()}
    videos, steps = [], []
    for i in range(cfg["runs"] + 1):                       # run 0 warms up
        log.clear()
        t = time.perf_counter()
        v = pipe.generate(cfg["prompt"], frames=cfg["frames"], seed=cfg["seed"])
        total = time.perf_counter() - t
        if i:
            videos.append({"latency_s": total, "stages": v.result.timings})
            steps.append(list(log))
    return {"backend": backend, "device": device, "videos": videos, "steps": steps,
            "tokens": v.tokens.tolist(), "peak_rss_mb": peak_rss_mb(),
            "torch_loaded": "torch" in sys.modules}


def _run_worker(backend: str, cfg: dict) -> dict:
    cmd = [sys.executable, "-m", "hiergen.tools.bench", "--worker", backend, "--config", json.dumps(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bench worker {backend!r} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


_GENERATE = ("import sys; from hiergen.cli import main; rc = main(sys.argv[1:]); "
             "from hiergen.tools.bench import peak_rss_mb; print('PEAK_RSS_MB', peak_rss_mb(), file=sys.stderr); "
             "sys.exit(rc)")


def generate_rss_mb(model: str | None, prompt: str, frames: int, seed: int, threads: int | None) -> float:
    """Peak RSS of a real `hiergen generate` run writing an MP4 (the CLI's own code, in a fresh process).

    Read as VmHWM inside that process at its end: counted from its exec, unlike
    the rusage of a child, which includes the forking parent's pages.
    """
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["generate", *prompt.split(), "-o", str(Path(tmp) / "v.mp4"), "--frames", str(frames),
                "--seed", str(seed), "-q"]
        argv += ["--model", model] if model else []
        argv += ["--threads", str(threads)] if threads else []
        r = subprocess.run([sys.executable, "-c", _GENERATE, *argv], capture_output=True, text=True)
    peak = [ln.split()[1] for ln in r.stderr.splitlines() if ln.startswith("PEAK_RSS_MB")]
    if r.returncode != 0 or not peak:
        raise RuntimeError(f"hiergen generate failed: {r.stderr[-2000:]}")
    return float(peak[0])


# ------------------------------------------------------------ summary
def _stage_of(run_steps: list, stages: list[str]) -> list[tuple[str, tuple]]:
    """Label each recorded step with its stage: steps come in stage order, one model per stage."""
    out, i = [], 0
    for stage in stages:
        model = STAGE_MODEL[stage]
        first = True
        while i < len(run_steps) and run_steps[i][0] == model:
            # a new prefill of the same model starts the next stage (the interpolation rounds)
            if run_steps[i][2] > 1 and not first:
                break
            out.append((stage, run_steps[i]))
            first = False
            i += 1
    return out


def summarise(report: dict, manifest: Manifest, bandwidth: float) -> dict:
    """Per-stage figures of one backend's report. The bound divides by the median copy bandwidth
    measured just before and after each of its workers ran, so steps and bandwidth share the
    machine's state of the moment (this VM's speed drifts by a third within minutes); `bandwidth`
    if the report has none."""
    if report.get("copy_bandwidth"):
        bandwidth = median(report["copy_bandwidth"])
    videos = report["videos"]
    stages = list(videos[0]["stages"])
    per_stage: dict[str, dict] = {}
    for run in report["steps"]:
        for stage, (model, batch, t, dt) in _stage_of(run, stages):
            s = per_stage.setdefault(stage, {"model": model, "batch": batch, "decode": [], "prefill": []})
            s["decode" if t == 1 else "prefill"].append(dt)
    new_frames = {"t2i": 1, "keyframe": 4, "interp1": 4, "interp2": 8, "interp3": 16}
    P = manifest.model_config.grid ** 2
    out = {}
    for stage, s in per_stage.items():
        wall = median(v["stages"][stage] for v in videos)
        entry = {"model": s["model"], "batch": s["batch"], "stage_ms": 1000 * wall,
                 "decode_steps": len(s["decode"]) // len(videos),
                 "decode_step_ms": 1000 * median(s["decode"]) if s["decode"] else None,
                 "prefill_ms": 1000 * median(s["prefill"]) if s["prefill"] else None,
                 "tokens_per_s": new_frames[stage] * P / wall}
        nbytes = step_bytes(manifest, s["model"], s["batch"])
        entry["bytes_per_step"] = nbytes
        entry["bandwidth_bound_ms"] = 1000 * nbytes / bandwidth
        out[stage] = entry
    return {"device": report["device"], "video_latency_s": median(v["latency_s"] for v in videos),
            "copy_bandwidth_gbs": bandwidth / 1e9,
            "copy_bandwidths_gbs": [b / 1e9 for b in report.get("copy_bandwidth", [])],
            "latencies_s": [v["latency_s"] for v in videos], "stages": out, "peak_rss_mb": report["peak_rss_mb"],
            "torch_loaded": report["torch_loaded"]}


def round_ratios(rounds: list[dict], manifest: Manifest, bandwidth: float) -> dict[str, list[float]]:
    """Per stage, each round's decode step over its bound (that round's median step, over the bandwidth
    measured just before and after that round's worker): how far the machine's drift moved the ratio
    within one run."""
    out: dict[str, list[float]] = {}
    for rep in rounds:
        for stage, s in summarise(rep, manifest, bandwidth)["stages"].items():
            if s["decode_step_ms"]:
                out.setdefault(stage, []).append(s["decode_step_ms"] / s["bandwidth_bound_ms"])
    return out


def step_bytes(manifest: Manifest, model: str, batch: int) -> int:
    """Bytes a decode step must read: the decode graph's weights (a lookup table one row per sequence,
    the manifest's read_bytes; all its initializers for a package that predates them) and its KV arena
    (every past tensor) at `batch`."""
    spec = manifest.fragment(model, "step")
    spec = manifest.fragments.get(spec.decode, spec)          # the graph decode steps run
    shapes = {t.name: t.shape for t in spec.inputs}
    kv = sum(int(np.prod([batch if d == "batch" else d for d in shapes[past]]))
             * np.dtype(spec.input(past).dtype).itemsize for past in spec.kv_cache.past_names)   # fp16 caches: 2
    read = spec.read_bytes
    weights = read["fixed"] + batch * read["per_sequence"] if read else spec.weight_bytes
    return weights + kv


def _ratios(main: dict, other: dict) -> dict:
    """Speed-ups of `other` over `main` (main's time over other's): the video and each stage's decode step."""
    out = {"video": main["video_latency_s"] / other["video_latency_s"]}
    for stage, s in main["stages"].items():
        o = other["stages"].get(stage, {})
        if s.get("decode_step_ms") and o.get("decode_step_ms"):
            out[stage] = s["decode_step_ms"] / o["decode_step_ms"]
    return out


def markdown(result: dict) -> str:
    lines = [f"# hiergen bench: {result['frames']} frames, \"{result['prompt']}\", seed {result['seed']}, "
             f"median of {result['runs']} runs"
             + (f" ({result['rounds']} rounds, the backends in turn)" if result.get("rounds", 1) > 1 else ""), "",
             f"Machine: {result['machine']}; copy bandwidth {result['copy_bandwidth_gbs']:.1f} GB/s at the start "
             "(bytes copied per second; STREAM would count twice that); threads: "
             + str(result["threads"] or "all cores"), "",
             "| backend | video latency (s) | vs PyTorch reference | peak RSS (MB) |", "|---|---:|---:|---:|"]
    ref = result["video_latency_s"].get("torch")
    for name, b in result["backends"].items():
        ratio = f"{ref / b['video_latency_s']:.2f}x" if ref else "-"
        lines.append(f"| {name} ({b['device']}) | {b['video_latency_s']:.3f} | {ratio} | {b['peak_rss_mb']:.0f} |")
    if result.get("packages"):
        main = next(k for k in result["backends"] if k != "torch")
        w0 = result["packages"][main]["weights"]
        stages = list(result["backends"][main]["stages"])
        lines += ["", "Packages, interleaved in the same rounds (speed-up: the main package's median time over this "
                      "one's; weights: the package's weights file):", "",
                  "| entry | precision | weights (MB) | weights vs main | all files (MB) | video speed-up | "
                  + " | ".join(f"{s} step speed-up" for s in stages) + " |",
                  "|---|---|---:|---:|---:|---:|" + "---:|" * len(stages)]
        for key, p in result["packages"].items():
            r = result.get("vs_main", {}).get(key, {})
            cells = [f"{r[s]:.2f}x" if s in r else "-" for s in stages]
            lines.append(f"| {key} | {p['precision']} | {p['weights'] / 1e6:.2f} | {100 * p['weights'] / w0:.0f}% | "
                         f"{p['files'] / 1e6:.2f} | {r['video']:.2f}x | " if r else
                         f"| {key} | {p['precision']} | {p['weights'] / 1e6:.2f} | 100% | {p['files'] / 1e6:.2f} | - | ")
            lines[-1] += " | ".join(cells) + " |"
    for b, n in result.get("tokens_differ_from_torch", {}).items():
        lines.append(f"\nSame seed, {b} vs the PyTorch reference: {n} of {result['tokens_per_video']} tokens differ.")
    if result.get("generate_peak_rss_mb"):
        lines += ["", f"`hiergen generate` (writes an MP4, torch never imported): peak RSS "
                      f"{result['generate_peak_rss_mb']:.0f} MB."]
    for name, b in result["backends"].items():
        bws = b.get("copy_bandwidths_gbs") or []
        lines += ["", f"## {name}", ""]
        if bws:
            lines += [f"Bound: bytes per step over {b['copy_bandwidth_gbs']:.1f} GB/s, the median copy bandwidth "
                      f"measured just before and after its workers ({min(bws):.1f}-{max(bws):.1f} GB/s).", ""]
        by_round = any(len(s.get("step_bound_by_round", [])) > 1 for s in b["stages"].values())
        lines += [
                  "| stage | batch | stage (ms) | decode steps | decode step (ms) | bound (ms) | step / bound | "
                  + ("step / bound, rounds | " if by_round else "") + "prefill (ms) | tokens/s |",
                  "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if by_round else "") + "---:|---:|"]
        for stage, s in b["stages"].items():
            bound = s.get("bandwidth_bound_ms")
            ratio = f"{s['decode_step_ms'] / bound:.2f}" if bound and s["decode_step_ms"] else "-"
            rr = s.get("step_bound_by_round") or []
            spread = (f"{min(rr):.2f}-{max(rr):.2f} | " if rr else "- | ") if by_round else ""
            lines.append(f"| {stage} | {s['batch']} | {s['stage_ms']:.0f} | {s['decode_steps']} | "
                         f"{s['decode_step_ms']:.2f} | {bound:.2f} | {ratio} | {spread}{s['prefill_ms'] or 0:.1f} | "
                         f"{s['tokens_per_s']:.0f} |")
        if by_round:
            lines += ["", "step / bound, rounds: the lowest and highest of the rounds' own ratios (each round's "
                          "median step over the bandwidth measured around that round's worker)."]
    return "\n".join(lines) + "\n"


def merge_reports(reports: list[dict]) -> dict:
    """One backend's worker reports from several rounds as one: videos, steps and bandwidths joined,
    the highest peak memory; the tokens must agree (same seed)."""
    first = reports[0]
    for r in reports[1:]:
        if r["tokens"] != first["tokens"]:
            raise RuntimeError(f"backend {first['backend']!r} made different tokens in two rounds with one seed")
    return {**first, **{k: [x for r in reports for x in r.get(k, [])] for k in ("videos", "steps", "copy_bandwidth")},
            "peak_rss_mb": max(r["peak_rss_mb"] for r in reports),
            "torch_loaded": any(r["torch_loaded"] for r in reports)}


def package_bytes(path: str) -> dict[str, int]:
    """A package's weights file and all its files (graphs, weights, tables), in bytes."""
    from hiergen.runtime.package import load_manifest
    m = load_manifest(path)
    files = [f for f in Path(path).rglob("*") if f.is_file()]
    return {"weights": (Path(path) / m.weights.file).stat().st_size, "files": sum(f.stat().st_size for f in files)}


def bench(model: str | None, backends: list[str], checkpoints: str | None, vqvae: str | None, runs: int,
          frames: int, prompt: str, seed: int, threads: int | None, rss: bool = True, rounds: int = 1,
          packages: dict[str, str] | None = None) -> dict:
    """`rounds` > 1 runs the backends' workers in turn that many times (each round `runs` timed videos
    per backend, after its own warm-up), so a drift in the machine's speed reaches every backend alike.
    packages: NAME -> another package (e.g. `hiergen quantize`'s int8-cpu), run on each ONNX Runtime backend
    beside `model` in the same rounds, reported as "BACKEND NAME" against its own bandwidth bound."""
    from hiergen.runtime.package import load_manifest
    from hiergen.runtime.pipeline import DEFAULT_PACKAGE

    model = str(model or DEFAULT_PACKAGE)
    manifest = load_manifest(model)
    bandwidth = machine_bandwidth(threads)
    tokens: dict[str, np.ndarray] = {}
    cfg = {"model": model, "checkpoints": checkpoints, "vqvae": vqvae, "runs": runs, "frames": frames,
           "prompt": prompt, "seed": seed, "threads": threads}
    entries = {b: (b, model) for b in backends}           # report key -> (backend, package)
    entries.update({f"{b} {name}": (b, str(pkg)) for name, pkg in (packages or {}).items()
                    for b in backends if b != "torch"})
    manifests = {key: manifest if pkg == model else load_manifest(pkg) for key, (_, pkg) in entries.items()}
    raw: dict[str, list[dict]] = {key: [] for key in entries}
    before = bandwidth
    for r in range(rounds):
        for key, (b, pkg) in entries.items():
            print(f"bench: {key}" + (f", round {r + 1} of {rounds}" if rounds > 1 else "") + " ...",
                  file=sys.stderr, flush=True)
            rep = _run_worker(b, {**cfg, "model": pkg})
            after = machine_bandwidth(threads, repeats=3)   # here, not in the worker: its peak RSS stays its own
            raw[key].append({**rep, "copy_bandwidth": [before, after]})
            before = after
    reports = {}
    for b in entries:
        merged = merge_reports(raw[b])
        tokens[b] = np.array(merged["tokens"])
        reports[b] = summarise(merged, manifests[b], bandwidth)
        for stage, ratios in round_ratios(raw[b], manifests[b], bandwidth).items():
            reports[b]["stages"][stage]["step_bound_by_round"] = ratios
    result = {"prompt": prompt, "frames": frames, "seed": seed, "runs": runs * rounds, "rounds": rounds,
              "threads": threads,
              "machine": machine(), "copy_bandwidth_gbs": bandwidth / 1e9,
              "backends": reports,
              "video_latency_s": {b: r["video_latency_s"] for b, r in reports.items()}}
    if packages:                 # each compared package against the main one, interleaved in the same rounds
        result["packages"] = {key: {"package": pkg, "precision": manifests[key].precision, **package_bytes(pkg)}
                              for key, (_, pkg) in entries.items() if key != "torch"}
        result["vs_main"] = {key: _ratios(reports[b], reports[key]) for key, (b, pkg) in entries.items()
                             if pkg != model}
    if "torch" in tokens:        # sampled with the same seed: the same tokens unless logits differ at a near-tie
        result["tokens_differ_from_torch"] = {b: int((t != tokens["torch"]).sum()) for b, t in tokens.items()
                                              if b != "torch"}
        result["tokens_per_video"] = int(tokens["torch"].size)
    main = next((b for b in backends if b != "torch"), None)
    if main and "torch" in reports:
        result["speedup_vs_torch"] = reports["torch"]["video_latency_s"] / reports[main]["video_latency_s"]
    if main:
        st = reports[main]["stages"]
        result["decode_step_ms"] = {k: s["decode_step_ms"] for k, s in st.items()}
        result["bandwidth_bound_ms"] = {k: s["bandwidth_bound_ms"] for k, s in st.items()}
    if rss:
        print("bench: hiergen generate (peak RSS) ...", file=sys.stderr, flush=True)
        result["generate_peak_rss_mb"] = generate_rss_mb(model, prompt, frames, seed, threads)
    result["peak_rss_mb"] = {**{b: r["peak_rss_mb"] for b, r in reports.items()},
                             **({"hiergen generate": result["generate_peak_rss_mb"]} if rss else {})}
    return result


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hiergen.tools.bench")
    p.add_argument("--worker", required=True)
    p.add_argument("--config", required=True)
    a = p.parse_args(argv)
    import logging
    logging.disable(logging.CRITICAL)
    import warnings
    warnings.simplefilter("ignore")
    rep = worker(a.worker, json.loads(a.config))
    print(json.dumps(rep))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
