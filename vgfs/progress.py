"""Progress for long work: a tqdm bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

_PLAIN_INTERVAL_S = 10.0


class _PlainProgress:
    """tqdm's update() interface, printing one line every few seconds (for logs and CI)."""

    def __init__(self, desc: str, total: float | None, unit: str) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.n = 0.0
        self._start = self._last = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= _PLAIN_INTERVAL_S:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        scale, unit = (1e6, "MB") if self.unit == "B" else (1, self.unit)
        done = f"{self.n / scale:.1f}"
        if self.total:
            done += f"/{self.total / scale:.1f} {unit} ({100 * self.n / self.total:.0f}%"
            eta = (self.total - self.n) * elapsed / self.n if self.n else 0
            done += f", ETA {eta:.0f} s)" if self.n < self.total else ")"
        else:
            done += f" {unit}"
        print(f"{self.desc}: {done}, {self.n / scale / elapsed:.1f} {unit}/s, {elapsed:.0f} s",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        self._line(time.monotonic())


@contextmanager
def progress(desc: str, total: float | None = None, unit: str = "it",
             enabled: bool = True) -> Iterator[tqdm | _PlainProgress]:
    """Yield an object with update(n); a bar on a terminal, plain lines when piped."""
    if enabled and sys.stderr.isatty():
        bar = tqdm(desc=desc, total=total, unit=unit, unit_scale=True, dynamic_ncols=True,
                   file=sys.stderr)
    else:
        bar = _PlainProgress(desc, total, unit)
        if not enabled:
            bar.close = lambda: None  # type: ignore[method-assign]
            bar.update = lambda n=1: None  # type: ignore[method-assign]
    try:
        yield bar
    finally:
        bar.close()


def warn(msg: str) -> None:
    """A line on stderr that the long work goes on despite something the user should know."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)
