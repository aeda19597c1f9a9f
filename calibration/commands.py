"""The precision commands: `hiergen quantize`, `hiergen build-engine`, `hiergen agreement` (one function each
over the parsed options; the CLI only parses and dispatches). Errors are HiergenErrors (exit status 2)."""
from __future__ import annotations

import sys

from hiergen.errors import UsageError


def quantize(args) -> int:
    from hiergen.calibration.capture import DEFAULT_PROMPTS, read_prompts
    from hiergen.runtime.manifest import Precision
    from hiergen.calibration.quantize import quantize_package

    precision = Precision.parse(args.precision)               # an unknown name fails before any work
    prompts = None
    if args.calibration_prompts:
        try:
            prompts = read_prompts(args.calibration_prompts)
        except OSError as e:
            raise UsageError(f"--calibration-prompts {args.calibration_prompts}: cannot read it ({e.strerror}): "
                             "give a file of training captions, one per line, or drop the option") from None
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.calibration is not None and args.calibration < 1:
        raise UsageError(f"--calibration needs at least 1 prompt, got {args.calibration}")
    out = quantize_package(args.package, args.out, precision, prompts=prompts,
                           n_prompts=args.calibration or DEFAULT_PROMPTS, seed=args.seed, keep=args.samples,
                           force=args.force, smooth_alpha=args.smooth,
                           log=None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True)))
    print(f"wrote {out} ({precision.value})")
    return 0


def build_engine(args) -> int:
    from hiergen.runtime.manifest import Precision, PrecisionError
    from hiergen.runtime.package import open_package
    from hiergen.runtime.tensorrt import EngineCache, build_all, default_cache_dir, require_tensorrt

    m = open_package(args.package)
    want = Precision.parse(args.precision) if args.precision else Precision(m.precision)
    if want is Precision.INT8_CPU or m.precision == Precision.INT8_CPU.value:
        raise PrecisionError("int8-cpu packages are for ONNX Runtime's CPU provider; TensorRT builds int8-qdq "
                             f"(hiergen quantize {args.package} --precision int8-qdq --out PKG)")
    if want.value != m.precision:
        raise PrecisionError(f"{args.package} is {m.precision}; for {want.value} engines quantise it first: "
                             f"hiergen quantize {args.package} --precision {want.value} --out PKG, then "
                             "hiergen build-engine PKG")
    require_tensorrt()                                        # one line naming what to install
    cache = EngineCache(args.cache or default_cache_dir(args.package))
    build_all(args.package, m, cache)
    print(f"engines in {cache.folder}")
    return 0


def agreement(args) -> int:
    from hiergen.calibration import agreement as ag
    from hiergen.fileio import write_json, write_text
    from hiergen.runtime.pipeline import DEFAULT_PACKAGE
    if args.prompts < 1:
        raise UsageError(f"--prompts needs at least 1 prompt, got {args.prompts}")
    r = ag.agreement(str(args.reference or DEFAULT_PACKAGE), args.packages, args.prompts, split=args.split)
    text = ag.markdown(r)
    print(text)
    if args.json:
        write_json(args.json, r)
    if args.markdown:
        write_text(args.markdown, text)
    return 0
