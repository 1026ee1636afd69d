"""Long commands stop on SIGTERM and SIGINT.

``ganbench evaluate|sample|train-features|bench|leaderboard`` run under :func:`stop_on_signals`: the first
SIGTERM or SIGINT raises :class:`Interrupted` in the main thread at once — inside a batch of generated
samples, an epoch of the feature net, the reference loop of ``bench`` (also inside a Trainer's hooks, where
Lightning's own SIGTERM flag is not read), a plot — and the command exits 128 + the signal (143, 130).
Files are written whole or not at all: a signal that arrives inside :func:`deferred` (a file being written)
is raised when the file is complete. ``ganbench fit`` keeps Lightning's handling (checkpoint, then exit 143;
:mod:`ganbench.reliability`), and ``ganbench sweep`` its own (:mod:`ganbench.sweep.resume`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: signals that stop a command
STOPPING = (signal.SIGINT, signal.SIGTERM)

_state: dict[str, int | None] = {"defer": 0, "pending": None}


class Interrupted(BaseException):
    """A command stopped by a signal (a BaseException, as KeyboardInterrupt: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: object) -> None:
    if _state["defer"]:
        _state["pending"] = signum
        return
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGINT raise :class:`Interrupted` while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOPPING}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """A signal that arrives while the block runs (a file being written) is raised when it ends."""
    _state["defer"] = int(_state["defer"] or 0) + 1
    try:
        yield
    finally:
        _state["defer"] = int(_state["defer"] or 1) - 1
        pending = _state["pending"]
        if not _state["defer"] and pending is not None:
            _state["pending"] = None
            raise Interrupted(pending)
