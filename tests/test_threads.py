"""Torch's thread count on a CPU fit: one thread per core that other busy processes leave free."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator

from ganbench.callbacks.threads import CpuThreads, available_cores, choose_threads
from ganbench.cli import EXIT_USAGE, main


@pytest.mark.parametrize(
    ("cores", "load", "current", "ceiling", "expected"),
    [
        (2, 2.0, 2, 2, 2),    # the fit alone: keeps both cores
        (2, 2.5, 2, 2, 2),    # half a thread of other work: not yet a core (LOWER_AT = 0.75)
        (2, 2.8, 2, 2, 1),    # 0.8 of a thread: one core taken
        (2, 3.0, 2, 2, 1),    # another busy process: one thread
        (2, 6.0, 2, 2, 1),    # four others: still at least one
        (2, 1.5, 1, 2, 1),    # lowered, other work at 0.5: stays lowered (hysteresis)
        (2, 1.2, 1, 2, 2),    # lowered, other work at 0.2 (< RAISE_BELOW): back to both cores
        (8, 1.0, 1, 4, 4),    # never above torch's default
        (8, 10.0, 8, 8, 6),   # 8 threads of its own and 2 of other work on 8 cores
    ],
)
def test_choose_threads(cores, load, current, ceiling, expected):
    assert choose_threads(cores, load, current, ceiling) == expected


def _trainer():
    return SimpleNamespace(accelerator=CPUAccelerator(), world_size=1)


def test_callback_lowers_at_start_raises_later_and_restores(monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = available_cores()
    if cores < 2:
        pytest.skip("needs 2 cores")
    before = torch.get_num_threads()
    torch.set_num_threads(cores)  # torch's untouched default
    loads = iter([cores - 0.5, 0.1])  # at start: cores - 0.5 other threads; later: the fit alone
    now = [0.0]
    cb = CpuThreads(loadavg=lambda: (next(loads), 0, 0), clock=lambda: now[0], interval_s=30)
    try:
        cb.setup(_trainer(), None, "fit")
        assert torch.get_num_threads() == 1
        err = capsys.readouterr().err
        assert f"ganbench: torch threads {cores} -> 1: the 1-minute load average shows about {cores - 0.5:.1f} other " \
               f"busy threads on {cores} cores (--run.threads N fixes the count)" in err
        now[0] = 10.0
        cb.on_train_batch_end(None, None, None, None, 0)  # before the interval: not read again
        assert torch.get_num_threads() == 1
        now[0] = 31.0
        cb.on_train_batch_end(None, None, None, None, 0)  # load 0.1 of which 1 is ours: raise
        assert torch.get_num_threads() == cores
        assert f"torch threads 1 -> {cores}" in capsys.readouterr().err
        cb.teardown(None, None, "fit")
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)


def test_fixed_counts_are_left_alone(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the environment decides
        cb = CpuThreads(loadavg=lambda: (50.0, 0, 0))
        cb.setup(_trainer(), None, "fit")
        assert not cb.active and torch.get_num_threads() == before
        monkeypatch.delenv("OMP_NUM_THREADS")
        cb = CpuThreads(threads=1, loadavg=lambda: (0.0, 0, 0))  # --run.threads 1
        cb.setup(_trainer(), None, "fit")
        assert torch.get_num_threads() == 1 and not cb.active
        cb.teardown(None, None, "fit")
        assert torch.get_num_threads() == before
        assert capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)


def test_negative_threads_is_one_line(tmp_path, capsys):
    code = main(["fit", "--config", "configs/sngan.yaml", "--data.dataset", "ring8", "--run.threads", "-1",
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    assert capsys.readouterr().err.strip() == \
        "ganbench: error: run.threads must be >= 0 (0: choose from the load), got -1"
    assert not (tmp_path / "run").exists()
