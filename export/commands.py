"""Entry functions for `hiergen export` and `hiergen check`: typed calls, return codes, messages on stderr."""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_export(checkpoints: str, vqvae: str, out: str, force: bool = False, keyframe: str | None = None,
               keyframe_rate: int | None = None) -> int:
    """0: package written and checked; 2: the inputs or the destination are not usable (message says why)."""
    import torch

    from hiergen.export.check import PackageError, check_package
    from hiergen.export.package import ExportError, export_package
    from hiergen.training.checkpoint import CheckpointError

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    try:
        plan = None
        if keyframe_rate is not None:
            from hiergen.runtime.plan import Plan
            plan = Plan(keyframe_rate={"quickly": keyframe_rate, "slowly": keyframe_rate, "default": keyframe_rate})
        path = export_package(checkpoints, vqvae, out, force=force, keyframe=keyframe, plan=plan)
        m = check_package(path)
    except (ExportError, CheckpointError, PackageError) as e:
        print(f"hiergen export: {e}", file=sys.stderr)
        return 2
    total = sum(f.stat().st_size for f in Path(path).iterdir())
    weights = m["weights"]["bytes"]
    print(f"wrote {path}: {total / 1e6:.2f} MB, of which weights {weights / 1e6:.2f} MB ({weights / total:.0%}); "
          f"{len(m['fragments'])} fragments checked")
    return 0


def cmd_check(path: str) -> int:
    """0: the package is valid; 1: it is not (the message says how to fix it)."""
    from hiergen.export.check import PackageError, check_package

    try:
        m = check_package(path)
    except PackageError as e:
        print(f"hiergen check: {e}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({m['format']} v{m['format_version']}, {len(m['fragments'])} fragments, hashes match)")
    return 0
