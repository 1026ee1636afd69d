"""The levers on D's scores (CR, bCR, zCR, LeCam, top-k) for the autoencoder-energy families: D's score
is the negative energy, so the base's regularizers and top-k selection apply to it unchanged."""

import csv
import math

import pytest
import torch

from ganbench import GanbenchError
from ganbench.models import BEGAN, EBGAN
from ganbench.models.base import Batch
from tests.test_population import IMAGES, assert_replica_equals, fit


def energies_module(cls=EBGAN, **kwargs):
    return cls(data_shape=(2,), latent_dim=2, width=8, d_norm="none", g_norm="none", **kwargs)


def test_lecam_pulls_each_energy_towards_the_other_sets_mean():
    """First step: the anchors are the batch's mean scores, −2 (reals) and −4 (fakes). A real of energy
    below the fakes' mean 4 and a fake above the reals' mean 2 are penalized:
    ((4−1)² + (4−3)²)/2 + (0² + (6−2)²)/2 = 5 + 8 = 13."""
    m = energies_module(margin=1.0, pt_weight=0.0, lecam_weight=0.5, lecam_decay=0.5)
    e_real, e_fake = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 6.0])
    m.d_energies = lambda real, labels: (e_real, e_fake, torch.zeros(2, 2), None)
    loss, logs = m.d_loss(Batch(torch.zeros(2, 2)))
    assert logs["lecam"].item() == 13.0
    assert loss.item() == 2.0 + 0.0 + 0.5 * 13.0  # E[D(x)] + E[[m − D(G(z))]⁺] + λ·LeCam
    assert m.lecam.real.item() == -1.0 and m.lecam.fake.item() == -2.0  # (1 − decay) × the mean scores


@pytest.mark.parametrize("cls", [EBGAN, BEGAN])
def test_top_k_keeps_the_fakes_of_lowest_energy(cls):
    """At epoch 1 with γ = 0.5, 2 of 4 fakes update G: those of energies 1 and 2, so G's loss (the mean
    energy of what updates it) is 1.5; the logged energy is still that of the whole batch."""
    m = energies_module(cls, pt_weight=0.0, top_k=True, top_k_gamma=0.5) if cls is EBGAN else \
        energies_module(cls, top_k=True, top_k_gamma=0.5)
    m.epochs_done = lambda: 1
    e_fake = torch.tensor([5.0, 1.0, 4.0, 2.0], requires_grad=True)
    m.g_energies = lambda real, labels: (e_fake, torch.zeros(4, 3), torch.zeros(4, 2), None)
    loss, _ = m.g_loss(Batch(torch.zeros(4, 2)))
    assert loss.item() == 1.5
    loss.backward()
    assert e_fake.grad.tolist() == [0.0, 0.5, 0.0, 0.5]
    assert m._energy_fake.item() == 3.0


def test_a_declared_reason_refuses_the_lever_in_one_line():
    class NoLeCam(EBGAN):
        score_levers_unsupported = {"lecam_weight": "its critic has no score to anchor"}

    with pytest.raises(GanbenchError, match=r"^model.lecam_weight=0.5 is not supported by ebgan: its critic has no "
                                            r"score to anchor; leave it unset for ebgan$"):
        NoLeCam(data_shape=(1, 16, 16), lecam_weight=0.5).check_levers()
    EBGAN(data_shape=(1, 16, 16), lecam_weight=0.5).check_levers()  # EBGAN declares every lever


#: each lever and the value it logs (None: top-k logs none)
LEVERS = {
    "cr_real": (["--model.init_args.cr_real", "1"], "cr_real"),
    "cr_fake": (["--model.init_args.cr_fake", "1"], "cr_fake"),
    "zcr": (["--model.init_args.zcr_dis", "1", "--model.init_args.zcr_gen", "0.5"], "zcr_gen"),
    "lecam": (["--model.init_args.lecam_weight", "0.1"], "lecam"),
    "top_k": (["--model.init_args.top_k", "true", "--model.init_args.top_k_gamma", "0.5"], None),
}
#: epochs of one batch (top-k's k < batch from the second G iteration on), and a D that learns fast enough
#: to give reals a lower energy than fakes within 3 iterations (LeCam acts only where D separates the sets)
ONE_BATCH_EPOCHS = ["--trainer.limit_train_batches", "1", "--trainer.log_every_n_steps", "1",
                    "--model.init_args.d_optimizer.init_args.lr", "0.01"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return fit(tmp_path_factory.mktemp("plain"), "ebgan", 0, *IMAGES, *ONE_BATCH_EPOCHS, steps=3)


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_each_lever_trains_an_energy_family(tmp_path, plain, lever):
    """EBGAN on 16×16 digits for 3 G iterations with the lever: it fits, logs its value, and changes
    the fit (top-k from the second iteration on, where k = 4 of 8)."""
    args, logged = LEVERS[lever]
    ckpt = fit(tmp_path, "ebgan", 0, *IMAGES, *ONE_BATCH_EPOCHS, *args, steps=3)
    weight = "discriminator.decoder.0.weight"
    assert not torch.equal(ckpt["state_dict"][weight], plain["state_dict"][weight])
    if logged is not None:
        with open(tmp_path / "metrics.csv") as f:
            values = [float(r[f"train/{logged}"]) for r in csv.DictReader(f) if r.get(f"train/{logged}")]
        assert len(values) == 3 and all(math.isfinite(v) and v >= 0 for v in values) and values[-1] > 0


def test_levers_in_a_population_replica_equals_its_fit(tmp_path):
    """LeCam, zCR (both terms) and top-k (k annealed over epochs of 2 batches) with EBGAN on ring8:
    replica 1 of seeds 5, 6 equals the fit with seed 6, its LeCam anchors included."""
    levers = ["--model.init_args.code_dim", "4", "--model.init_args.d_norm", "layer",
              "--model.init_args.lecam_weight", "0.1", "--model.init_args.zcr_dis", "1", "--model.init_args.zcr_gen",
              "0.5", "--model.init_args.top_k", "true", "--model.init_args.top_k_gamma", "0.5",
              "--trainer.limit_train_batches", "2", "--model.init_args.d_optimizer.init_args.lr", "0.01"]
    pop = fit(tmp_path / "pop", "ebgan", 5, "--model.init_args.population", "2", *levers, steps=6)
    one = fit(tmp_path / "one", "ebgan", 6, *levers, steps=6)
    assert_replica_equals(pop, 1, one, rtol=1e-4, atol=1e-5)
    for key in ("lecam.real", "lecam.fake"):
        torch.testing.assert_close(pop["state_dict"][key][1:], one["state_dict"][key], rtol=1e-4, atol=1e-5)
    assert pop["state_dict"]["lecam.real"].shape == (2,)
