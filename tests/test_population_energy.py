"""Populations of the autoencoder-energy families (EBGAN, BEGAN, MAGAN): replica k of a population with
seeds s, s+1, … equals the ordinary fit with seed s+k — its networks, optimizer-driven weights and its own
state (BEGAN's k, MAGAN's margin and window)."""

import pytest
import torch

from ganbench.models import BEGAN, EBGAN, MAGAN, load_module
from ganbench.nn.autoencoder import ConvAutoencoder, MLPAutoencoder
from ganbench.nn.stacking import stack_modules
from tests.test_population import assert_replica_equals, fit

#: the energy families' own settings that make their state move within a short fit. D takes layer norm:
#: under batch norm a decoder bias whose units stay in ELU's linear part has zero gradient in exact
#: arithmetic, and Adam turns its rounding noise into full steps (the stacked batch norm is checked below)
LAYER = ["--model.init_args.code_dim", "4", "--model.init_args.d_norm", "layer"]
SETTINGS = {
    "ebgan": LAYER,  # pulling-away term (weight 0.1), batch norm in G
    "began": ["--model.init_args.code_dim", "4", "--model.init_args.lambda_k", "0.01",
              "--model.init_args.k_init", "0.5",
              "--model.init_args.g_optimizer.init_args.lr", "0.002",  # the paper's 1e-4 moves D too little
              "--model.init_args.d_optimizer.init_args.lr", "0.002"],  # in 10 steps to tell fits apart
    "magan": [*LAYER, "--model.init_args.margin_every", "3",  # D learns fast enough that the margin
              "--model.init_args.d_optimizer.init_args.lr", "0.01"],  # adapts at step 9
}
STEPS = 10


@pytest.mark.parametrize("family", sorted(SETTINGS))
def test_energy_replica_equals_the_fit_with_its_seed(tmp_path, family):
    """Replica 2 of seeds 5, 6, 7 is the fit with seed 7 after 10 G iterations, its state included."""
    pop = fit(tmp_path / "pop", family, 5, "--model.init_args.population", "3", *SETTINGS[family], steps=STEPS)
    one = fit(tmp_path / "one", family, 7, *SETTINGS[family], steps=STEPS)
    assert_replica_equals(pop, 2, one, rtol=1e-4, atol=1e-5)
    mine, theirs = pop["ganbench"], one["ganbench"]
    loaded = load_module(tmp_path / "pop" / "checkpoints" / "last.ckpt", replica=2)  # the ordinary fit it is
    if family == "began":
        assert len(mine["began_k"]) == 3 and 0 < theirs["began_k"] < 1 and theirs["began_k"] != 0.5  # moved off k_0
        assert mine["began_k"][2] == pytest.approx(theirs["began_k"], rel=1e-4, abs=1e-5)
        assert mine["began_k"][0] != mine["began_k"][2]  # each replica on its own energies
        assert loaded.k == mine["began_k"][2]
    if family == "magan":
        assert len(mine["magan"]["margin"]) == 3
        assert mine["magan"]["margin"][2] == pytest.approx(theirs["magan"]["margin"], rel=1e-4, abs=1e-5)
        assert mine["magan"]["window"][2] == pytest.approx(theirs["magan"]["window"], rel=1e-4, abs=1e-5)
        assert mine["magan"]["margin"][0] != mine["magan"]["margin"][2]
        assert loaded.margin == mine["magan"]["margin"][2]
        assert loaded.magan_window.tolist() == mine["magan"]["window"][2]
        assert theirs["magan"]["margin"] == pytest.approx(0.7306, rel=1e-3)  # adapted at step 9 (m_0 = 1.8933)


@pytest.mark.parametrize("cls, shape", [(MLPAutoencoder, (2,)), (ConvAutoencoder, (1, 8, 8))])
def test_stacked_autoencoder_computes_each_replicas_energy_and_code(cls, shape):
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(cls(shape=shape, width=4, code_dim=3, norm="batch"))
    stacked = stack_modules(nets)
    x = torch.randn(3 * 5, *shape)
    energy, code = stacked.energy_and_code(x)
    for r, net in enumerate(nets):
        ref_energy, ref_code = net.energy_and_code(x[5 * r: 5 * (r + 1)])
        torch.testing.assert_close(energy[5 * r: 5 * (r + 1)], ref_energy, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(code[5 * r: 5 * (r + 1)], ref_code, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [EBGAN, BEGAN, MAGAN])
def test_energy_families_declare_their_losses_batched(cls):
    assert cls.population_refusal() is None
    assert cls.batched_overrides == {"d_loss", "g_loss"}
