"""A small progress bar for long work (no dependency): `for x in progress(items, "render"):`.

On a terminal it redraws one line; elsewhere (CI, logs) it prints a line at
most every `log_every_s` seconds, so long runs stay visible without flooding.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    def __init__(self, total: int | None, desc: str = "", unit: str = "it",
                 stream=None, log_every_s: float = 10.0, enabled: bool = True, start: int = 0):
        """`start`: work already done before this bar (a resumed run): counted in n, not in the rate."""
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every_s, self.enabled = log_every_s, enabled
        self.n, self.start, self.postfix = start, start, ""
        self.t0 = self._last = time.perf_counter()

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        if postfix:
            self.postfix = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in postfix.items())
        now = time.perf_counter()
        if self.enabled and (now - self._last >= (0.1 if self.tty else self.log_every_s)):
            self._last = now
            self._draw(end="")

    def _draw(self, end: str) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = (self.n - self.start) / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = self.n / self.total
            bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
            eta = (self.total - self.n) / rate if rate > 0 else 0.0
            head = f"{self.desc} [{bar}] {self.n}/{self.total} {frac:4.0%} {elapsed:.0f}s<{eta:.0f}s"
        else:
            head = f"{self.desc} {self.n} {elapsed:.0f}s"
        line = f"{head} {rate:.3g} {self.unit}/s {self.postfix}".rstrip()
        if self.tty:
            self.stream.write("\r\033[K" + line + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(end="\n")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(items: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it",
             enabled: bool = True) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit, enabled=enabled) as bar:
        for x in items:
            yield x
            bar.update()
