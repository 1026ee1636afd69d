"""``model.update_order``: simultaneous updates (both players' gradients at the same parameters, then
both steps) in every executor — a population equals its single fits, a killed fit resumes bit for
bit, the graph executor replays the eager step — and the order is a factor a sweep can vary."""

import signal
import sys
from pathlib import Path

import pytest
import torch

from ganbench import GanbenchError
from ganbench.models import GAN
from ganbench.sweep.space import parse_space
from tests.test_graph import GRAPH, assert_same_fit, eager_fit, emulated  # noqa: F401 (a fixture)
from tests.test_graph import fit as graph_fit
from tests.test_population import PACKED, TOY, assert_replica_equals, fit
from tests.test_sweep import TINY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from kill_resume import compare_checkpoints, fit_argv, interrupt, start_fit  # noqa: E402

SIM = ["--model.init_args.update_order", "simultaneous"]
#: packing, EMA, a penalty and instance noise together: what the simultaneous step must carry
LEVERS = [*PACKED, "--model.init_args.ema_decay", "0.9", "--model.init_args.penalty", "r1",
          "--model.init_args.penalty_weight", "1", "--model.init_args.instance_noise", "0.1"]


@pytest.mark.parametrize("config, extra", [("gan", []), ("pacgan_ring", LEVERS)], ids=["gan", "pacgan_ring-levers"])
def test_simultaneous_population_of_three_equals_three_single_fits(tmp_path, config, extra):
    """ring8, a population of 3 (seeds 5, 6, 7) with simultaneous updates: each replica is the
    population-1 simultaneous fit with its seed (the population test's tolerance), and not the
    alternating fit."""
    pop = fit(tmp_path / "pop", config, 5, "--model.init_args.population", "3", *SIM, *extra)
    for k in range(3):
        one = fit(tmp_path / f"one{k}", config, 5 + k, *SIM, *extra)
        assert_replica_equals(pop, k, one, rtol=1e-4, atol=1e-5)
    alternating = fit(tmp_path / "alt", config, 7, *extra)
    with pytest.raises(AssertionError):
        assert_replica_equals(pop, 2, alternating, rtol=1e-4, atol=1e-5)


def test_killed_simultaneous_population_resumes_bit_identical(tmp_path):
    """A population of 3 with simultaneous updates, SIGKILLed after G iteration 5 and resumed from its
    last checkpoint, ends with every tensor (G, D, both optimizers, RNG) equal to the uninterrupted fit."""
    steps = 14
    args = [*TOY, "--model.init_args.population", "3", *SIM, "--run.checkpoint_every", "1",
            "--model.init_args.n_critic", "2"]  # n_critic 2: one alternating D step, then the simultaneous pair
    ref = start_fit(fit_argv("configs/gan.yaml", tmp_path / "reference", steps, *args), tmp_path / "reference.log")
    proc = start_fit(fit_argv("configs/gan.yaml", tmp_path / "run", steps, *args), tmp_path / "killed.log")
    assert interrupt(proc, tmp_path / "run", 5, signal.SIGKILL) == -signal.SIGKILL
    resumed = start_fit(fit_argv("configs/gan.yaml", tmp_path / "run", steps, *args, "--ckpt_path", "last"),
                        tmp_path / "resumed.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert ref.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    a, b = tmp_path / "reference" / "checkpoints" / "last.ckpt", tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(b, weights_only=False)["global_step"] == steps
    assert compare_checkpoints(a, b) == []


@pytest.mark.parametrize("config, args", [
    ("gan", ["--model.init_args.population", "3", "--model.init_args.ema_decay", "0.9"]),
    ("wgan", []),  # clipping after the simultaneous D step, n_critic 5
    ("pacgan_ring", [*LEVERS, "--model.init_args.penalty_every", "2"]),  # a lazy penalty: two graphs
], ids=["gan-population-ema", "wgan-clip-n_critic-5", "pacgan_ring-levers-lazy"])
def test_simultaneous_graph_replays_equal_the_eager_fit(tmp_path, emulated, capsys, config, args):  # noqa: F811
    eager = eager_fit(tmp_path / "eager", config, *SIM, *args)
    graph = graph_fit(tmp_path / "graph", config, *SIM, *args, *GRAPH)
    out = capsys.readouterr()
    assert "falls back" not in out.out + out.err
    assert emulated.replays > 0
    assert_same_fit(graph, eager)


def test_update_order_is_a_sweep_factor_and_a_bad_one_is_one_line():
    space = parse_space({**TINY, "factors": {"model.init_args.update_order": ["alternating", "simultaneous"]}},
                        "orders.yaml")
    assert list(space.factors["model.init_args.update_order"]) == ["alternating", "simultaneous"]
    with pytest.raises(GanbenchError, match="update_order='simultanous' is not valid; choose one of: alternating, "
                                            "simultaneous"):
        parse_space({**TINY, "factors": {"model.init_args.update_order": ["simultanous"]}}, "bad.yaml")
    with pytest.raises(GanbenchError, match="model.update_order='both' is not valid"):
        GAN(data_shape=(2,), update_order="both")
