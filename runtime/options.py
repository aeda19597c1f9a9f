"""Generation options: one frozen object, checked once, shared by the CLI, Pipeline and the reference.

    opts = GenerationOptions(frames=33, seed=7, top_k=4)     # raises OptionError on a bad value
    pipe.generate("a small red circle moves left slowly", options=opts)

None for temperature, top_k or top_p means the model package's plan decides.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

from hiergen.errors import HiergenError
from hiergen.runtime.plan import FRAME_COUNTS, Plan
from hiergen.runtime.sampler import SamplerOptions

SEED_MAX = 2 ** 64 - 1        # the sampler's generator works modulo 2**64: larger seeds would repeat smaller ones


class OptionError(HiergenError, ValueError):
    """A generation option out of range or of the wrong type; the message names the allowed values."""


def check_threads(threads: int | None) -> None:
    """CPU threads: 1 .. 4 x the cores, or None for the library's default (one run at --threads 1000
    started 11,000 threads)."""
    most = 4 * (os.cpu_count() or 1)
    if threads is not None and not (_is_int(threads) and 1 <= threads <= most):
        raise OptionError(f"--threads must be 1 to {most} (4 x this machine's {most // 4} cores), got {threads}")


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


@dataclass(frozen=True)
class GenerationOptions:
    frames: int = 33                  # 5, 9, 17 or 33: keyframes, then each interpolation round doubles
    seed: int = 0                     # 0 .. 2**64 - 1; the same seed gives the same video on every runtime
    temperature: float | None = None  # > 0, or 0 for greedy
    top_k: int | None = None          # 0 = no cut, 1 = greedy
    top_p: float | None = None        # (0, 1], 1 = off
    strict: bool = False              # refuse prompts with words the model never saw

    def __post_init__(self) -> None:
        problems = []
        if not _is_int(self.frames) or self.frames not in FRAME_COUNTS:
            problems.append(f"frames must be one of {', '.join(map(str, FRAME_COUNTS))}, got {self.frames!r}")
        if not _is_int(self.seed) or not 0 <= self.seed <= SEED_MAX:
            problems.append(f"seed must be a whole number from 0 to 2**64 - 1, got {self.seed!r}")
        if self.temperature is not None and not (_is_real(self.temperature) and self.temperature >= 0):
            problems.append(f"temperature must be a number >= 0 (0 = greedy), got {self.temperature!r}")
        if self.top_k is not None and not (_is_int(self.top_k) and self.top_k >= 0):
            problems.append(f"top_k must be a whole number >= 0 (0 = no cut, 1 = greedy), got {self.top_k!r}")
        if self.top_p is not None and not (_is_real(self.top_p) and 0 < self.top_p <= 1):
            problems.append(f"top_p must be a number in (0, 1] (1 = off), got {self.top_p!r}")
        if not isinstance(self.strict, bool):
            problems.append(f"strict must be True or False, got {self.strict!r}")
        if problems:
            raise OptionError("; ".join(problems))

    def sampler(self, plan: Plan) -> SamplerOptions:
        """The sampler settings: these options where given, the plan's elsewhere."""
        return SamplerOptions(temperature=plan.temperature if self.temperature is None else float(self.temperature),
                              top_k=plan.top_k if self.top_k is None else int(self.top_k),
                              top_p=plan.top_p if self.top_p is None else float(self.top_p), seed=int(self.seed))
