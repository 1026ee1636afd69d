"""``model.update_order``: simultaneous updates (both players' gradients at the same parameters) in
every executor — a population equals its single fits, a killed fit resumes bit for bit, the graph
executor replays the eager step — and the order is a setting that changes the arithmetic."""

import signal
import sys
from pathlib import Path

import pytest
import torch

from tests.test_population import assert_replica_equals, fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from kill_resume import compare_checkpoints, fit_argv, interrupt, start_fit  # noqa: E402

SIM = ["--model.init_args.update_order", "simultaneous"]


def test_simultaneous_population_of_three_equals_three_single_fits(tmp_path):
    """ring8, GAN, population of 3 (seeds 5, 6, 7) with simultaneous updates: each replica is the
    population-1 simultaneous fit with its seed (the population test's tolerance), and not the
    alternating fit."""
    pop = fit(tmp_path / "pop", "gan", 5, "--model.init_args.population", "3", *SIM)
    for k in range(3):
        one = fit(tmp_path / f"one{k}", "gan", 5 + k, *SIM)
        assert_replica_equals(pop, k, one, rtol=1e-4, atol=1e-5)
    alternating = fit(tmp_path / "alt", "gan", 7)
    with pytest.raises(AssertionError):
        assert_replica_equals(pop, 2, alternating, rtol=1e-4, atol=1e-5)
