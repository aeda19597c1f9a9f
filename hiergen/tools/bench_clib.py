"""`hiergen bench`'s worker for the C library (backend "clib"): libhiergen through ctypes, in its own process.

It reports what hiergen/tools/bench.py's worker() reports for the Python engine (the same prompt, seed and
package; one warm-up video, then `runs` timed ones): whole-video latency, per-stage wall times (taken at
each stage's last token through the progress callback, so they include its ctypes call per token), the
tokens (worker() in bench.py adds the process's peak RSS). The library must be built (make clib); per-step times are not
recorded (the steps run inside the library), so its stage table stays empty.
"""
from __future__ import annotations

import sys
import time

STAGE_KEYS = {"frame 1": "t2i", "keyframes": "keyframe", "round 1": "interp1", "round 2": "interp2",
              "round 3": "interp3"}


def worker(cfg: dict) -> dict:
    from hiergen.errors import HiergenError
    from hiergen.runtime.pipeline import DEFAULT_PACKAGE
    from hiergen.tools.clib import BUILD, CModel

    lib = BUILD[False] / "libhiergen.so"
    if not lib.is_file():
        raise HiergenError(f"{lib} is not built: run `make clib` (needs cmake and a C++ compiler) before "
                           "benchmarking the clib backend")
    model = CModel.load(cfg["model"] or DEFAULT_PACKAGE, threads=cfg["threads"] or 0, lib=lib)
    videos = []
    for i in range(cfg["runs"] + 1):                       # run 0 warms up
        marks: list[tuple[str, float]] = []

        def progress(stage: str, done: int, total: int) -> bool:
            if done == total:
                marks.append((STAGE_KEYS.get(stage, stage), time.perf_counter()))
            return True
        t = time.perf_counter()
        v = model.generate(cfg["prompt"], frames=cfg["frames"], seed=cfg["seed"], progress=progress)
        total = time.perf_counter() - t
        stages, last = {}, t
        for name, at in marks:
            stages[name], last = at - last, at
        if i:
            videos.append({"latency_s": total, "stages": stages})
    return {"backend": "clib", "device": f"libhiergen, {model.device}", "videos": videos,
            "steps": [[] for _ in videos], "tokens": v.tokens.tolist(), "torch_loaded": "torch" in sys.modules}
