"""Long commands stop on SIGTERM/SIGINT within a step, and leave no file half-written."""

from __future__ import annotations

import os
import signal

import pytest

from ganbench.signals import Interrupted, deferred, stop_on_signals


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_bench_stops_inside_its_reference_warm_up(monkeypatch, capsys, signum, code):
    """The reference loop's warm-up runs inside the Trainer's on_train_start, where Lightning does not read its
    SIGTERM flag: the signal sent at its first of 50 iterations stops `ganbench bench` after that iteration."""
    from ganbench.cli import main
    from ganbench.commands.bench import PlainLoop

    real, done = PlainLoop.run, []

    def run(self, n: int) -> float:
        if not done:  # the first call is the warm-up, inside on_train_start
            os.kill(os.getpid(), signum)
        for _ in range(n):
            real(self, 1)
            done.append(1)
        return 1.0

    monkeypatch.setattr(PlainLoop, "run", run)
    argv = ["bench", "--config", "configs/sngan.yaml", "--warmup", "50", "--steps", "2", "--device", "cpu",
            "--", "--data.dataset", "ring8", "--data.n_toy_samples", "1000", "--model.init_args.width", "8"]
    assert main(argv) == code
    assert len(done) <= 1
    assert f"ganbench bench: stopped by {signal.Signals(signum).name}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are given back


def test_a_signal_inside_a_file_write_waits_for_the_file(tmp_path):
    out = tmp_path / "table.csv"
    with pytest.raises(Interrupted) as stopped, stop_on_signals():
        with deferred():
            with open(out, "w") as f:
                f.write("a,b\n")
                os.kill(os.getpid(), signal.SIGTERM)
                for i in range(1000):
                    f.write(f"{i},{i}\n")
        raise AssertionError("not reached: the signal is raised when the file is complete")
    assert stopped.value.exit_code == 143
    assert len(out.read_text().splitlines()) == 1001
