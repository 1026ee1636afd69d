"""Torch's thread count for a fit on the CPU, chosen from the cores and what else is running.

Torch starts one intra-op thread per core. On an idle machine that is right; as soon as another busy
process shares the cores, the threads of a small model spin-wait on each other and a fit slows several
times (docs/benchmarks.md, "make run on a CPU": SNGAN's CPU profile alone runs 0.16 s per G iteration
with 2 threads and 0.30 s with 1; beside other busy processes 2 threads took 192 s for 60 iterations
that 1 thread ran in 44 s).

``--run.threads 0`` (the default) lets :class:`CpuThreads` choose: at the start and then every
``interval_s`` seconds it reads the 1-minute load average, subtracts the fit's own threads, and uses
one thread per core that the other work leaves free (at least one, at most torch's default). A change
is said on the console in one line. ``--run.threads N`` fixes N threads; so does the environment
variable ``OMP_NUM_THREADS``, and so does a program that set torch's count before the fit (a sweep
worker, a script): ganbench then leaves the count alone. A fixed count is what a
bit-exact comparison of two fits needs: the summation order of a convolution depends on the threads.
"""

from __future__ import annotations

import math
import os
import sys
import time

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator

LOWER_AT = 0.75
"""Other busy threads (load average minus the fit's own) from which a core counts as taken."""
RAISE_BELOW = 0.25
"""…and below which a core given up earlier counts as free again (hysteresis: no flapping)."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def choose_threads(cores: int, load: float, current: int, ceiling: int) -> int:
    """Threads for a fit that now runs ``current`` threads, given the 1-minute ``load`` average of a
    machine with ``cores`` cores; never above ``ceiling`` (torch's default) or below 1.

    The other work is ``load - current`` busy threads. A core counts as taken once the other work
    reaches ``LOWER_AT`` of it, and as free again only when the other work is ``RAISE_BELOW`` under it,
    so a load average between the two keeps the count as it is.
    """
    other = max(0.0, load - current)
    lower_to = cores - math.floor(other + 1 - LOWER_AT)
    raise_to = cores - math.ceil(other - RAISE_BELOW)
    want = current
    if current > lower_to:
        want = lower_to
    elif current < raise_to:
        want = raise_to
    return max(1, min(ceiling, want))


class CpuThreads(L.Callback):
    """Sets torch's thread count for a single-process CPU fit (see the module docstring)."""

    def __init__(self, threads: int = 0, interval_s: float = 30.0, *, loadavg=os.getloadavg, clock=time.monotonic):
        self.threads = threads
        self.interval_s = interval_s
        self._loadavg = loadavg
        self._clock = clock
        self._next = 0.0
        self.ceiling = torch.get_num_threads()
        self.active = False
        self._restore: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(trainer.accelerator, CPUAccelerator) or trainer.world_size > 1:
            return
        self._restore = torch.get_num_threads()  # a process may run several fits (tests, sweeps)
        if self.threads > 0:
            torch.set_num_threads(self.threads)
            return
        if os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads() != available_cores():
            return  # the user, a script or a sweep worker fixed the count
        self.active = True
        self.ceiling = min(torch.get_num_threads(), available_cores())
        self._check(at_start=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._restore is not None:
            torch.set_num_threads(self._restore)
            self._restore = None
        self.active = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.active and self._clock() >= self._next:
            self._check()

    def _check(self, at_start: bool = False) -> None:
        self._next = self._clock() + self.interval_s
        cores, current = available_cores(), torch.get_num_threads()
        load = float(self._loadavg()[0])
        if at_start:  # the fit has not run yet: its own threads are not in the average
            current = min(current, self.ceiling)
            load += current
        want = choose_threads(cores, load, current, self.ceiling)
        if want == torch.get_num_threads():
            return
        print(f"ganbench: torch threads {torch.get_num_threads()} -> {want}: the 1-minute load average shows "
              f"about {max(0.0, load - current):.1f} other busy threads on {cores} cores "
              "(--run.threads N fixes the count)", file=sys.stderr, flush=True)
        torch.set_num_threads(want)
