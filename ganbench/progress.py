"""Progress of long measurements (sampling, feature extraction, feature-net training), visible also
when output goes to a file: a tqdm bar on a terminal, otherwise one ``ganbench: <what>: i/n`` line at
every tenth and at the end (a bar redrawn with carriage returns is unreadable in a log)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Lines:
    """The non-terminal form: a line at each completed tenth of ``total``."""

    def __init__(self, desc: str, total: int, stream: Any):
        self.desc, self.total, self.stream = desc, total, stream
        self.n, self.printed, self.t0 = 0, 0, time.perf_counter()

    def update(self, k: int) -> None:
        self.n += k
        tenth = 10 * self.n // max(self.total, 1)
        if tenth > self.printed or self.n >= self.total:
            self.printed = tenth
            print(f"ganbench: {self.desc}: {self.n}/{self.total} ({time.perf_counter() - self.t0:.0f} s)",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.n < self.total:
            print(f"ganbench: {self.desc}: stopped at {self.n}/{self.total}", file=self.stream, flush=True)


@contextmanager
def progress(desc: str, total: int, enabled: bool = True, stream: Any = None) -> Iterator[Any]:
    """``with progress("fd_fmnist_10k: generating", 10000) as bar: bar.update(k)``."""
    stream = stream or sys.stderr
    if not enabled:
        bar: Any = _Null()
    elif getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, file=stream, leave=False, dynamic_ncols=True)
    else:
        bar = _Lines(desc, total, stream)
    try:
        yield bar
    finally:
        bar.close()


class _Null:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass
