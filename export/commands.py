"""The export wing's command, `hiergen export`: a typed call, and `export(args)` for the CLI's dispatch;
errors are HiergenErrors the CLI prints."""
from __future__ import annotations

from pathlib import Path


def cmd_export(checkpoints: str, vqvae: str, out: str, force: bool = False, keyframe: str | None = None,
               keyframe_rate: int | None = None, interp: str | None = None) -> int:
    """Write the package and check it; raises ExportError, CheckpointError or PackageError saying why not."""
    import torch

    from hiergen.export.package import export_package
    from hiergen.runtime.check import check_package

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    plan = None
    if keyframe_rate is not None:
        from hiergen.runtime.plan import Plan
        plan = Plan(keyframe_rate={"quickly": keyframe_rate, "slowly": keyframe_rate, "default": keyframe_rate})
    path = export_package(checkpoints, vqvae, out, force=force, keyframe=keyframe, interp=interp,
                          plan=plan)
    m = check_package(path)["manifest"]
    total = sum(f.stat().st_size for f in Path(path).iterdir())
    weights = m.weights.bytes
    print(f"wrote {path}: {total / 1e6:.2f} MB, of which weights {weights / 1e6:.2f} MB ({weights / total:.0%}); "
          f"{len(m.fragments)} fragments checked")
    return 0


def export(args) -> int:
    return cmd_export(args.checkpoints, args.vqvae, args.out, args.force, args.keyframe, args.keyframe_rate,
                      args.interp)
