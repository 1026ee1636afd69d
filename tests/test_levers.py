"""Stability levers beyond losses and penalties: consistency regularization (CR, bCR, zCR), LeCam,
top-k training, augmentation of D's inputs, limited training sets and D's overfitting signal."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from ganbench import GanbenchError
from ganbench.callbacks.overfit import DiscriminatorOverfit
from ganbench.cli import EXIT_USAGE, main
from ganbench.data.datamodule import GANDataModule
from ganbench.models import GAN
from ganbench.models.base import Batch
from ganbench.regularizers import LeCamAnchors, consistency_penalty, latent_sensitivity, lecam_penalty
from ganbench.tricks import top_k_count, top_k_rows
from tests.test_population import PACKED, assert_replica_equals, assert_resume_exact, fit

LEVERS = ["--model.init_args.lecam_weight", "0.3", "--model.init_args.zcr_dis", "5",
          "--model.init_args.zcr_gen", "0.5", "--model.init_args.top_k", "true",
          "--model.init_args.top_k_gamma", "0.5", "--model.init_args.top_k_min", "0.25"]


# ------------------------------------------------------------------------------ closed forms
def test_lecam_on_constant_outputs_is_its_closed_form():
    """D ≡ a on reals, ≡ b on fakes, anchors α_R, α_F: relu(a − α_F)² + relu(α_R − b)²."""
    real, fake = torch.full((6, 1), 2.0), torch.full((6, 1), -1.0)
    value = lecam_penalty(real, fake, anchor_real=torch.tensor(1.5), anchor_fake=torch.tensor(0.5))
    assert value.item() == pytest.approx((2.0 - 0.5) ** 2 + (1.5 - -1.0) ** 2)
    # inside the anchors: no pull (the relu of the reference implementation)
    assert lecam_penalty(real, fake, torch.tensor(-3.0), torch.tensor(3.0)).item() == 0.0
    # two replicas folded (3 rows each), each with its own anchors
    real2 = torch.tensor([[1.0], [1.0], [1.0], [4.0], [4.0], [4.0]])
    fake2 = torch.zeros(6, 1)
    both = lecam_penalty(real2, fake2, torch.tensor([0.0, 1.0]), torch.tensor([0.5, 5.0]), replicas=2)
    torch.testing.assert_close(both, torch.tensor([0.5 ** 2, 1.0 ** 2]))


def test_lecam_anchors_are_debiased_moving_averages():
    anchors = LeCamAnchors(replicas=1, decay=0.9)
    r, f = anchors.update(torch.full((4, 1), 2.0), torch.full((4, 1), -2.0))
    assert (r.item(), f.item()) == pytest.approx((2.0, -2.0))  # the first anchor is the first mean
    r, f = anchors.update(torch.full((4, 1), 4.0), torch.full((4, 1), 0.0))
    # EMA 0.9·(0.1·2) + 0.1·4 = 0.58, debiased by 1 − 0.9² = 0.19
    assert r.item() == pytest.approx(0.58 / 0.19)
    assert f.item() == pytest.approx((0.9 * 0.1 * -2.0) / 0.19)
    assert set(anchors.state_dict()) == {"real", "fake", "steps"}


def test_consistency_and_latent_sensitivity_closed_forms():
    d = torch.full((4, 1), 2.0)
    assert consistency_penalty(d, torch.full((4, 1), 5.0)).item() == 9.0
    patch = consistency_penalty(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2))  # a patch D: sum over patches
    assert patch.item() == 4.0
    per = consistency_penalty(torch.zeros(4, 1), torch.tensor([[1.0], [1.0], [2.0], [2.0]]), replicas=2)
    torch.testing.assert_close(per, torch.tensor([1.0, 4.0]))
    x = torch.zeros(3, 1, 2, 2)
    assert latent_sensitivity(x, x + 0.5).item() == pytest.approx(4 * 0.25)


def test_top_k_selects_the_highest_scored_fakes_of_each_replica():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 7.0, -1.0, 2.0, 3.0]).unsqueeze(1)
    assert top_k_rows(scores[:4], 2).tolist() == [1, 2]
    assert top_k_rows(scores, 2, replicas=2).tolist() == [1, 2, 4, 7]
    with pytest.raises(GanbenchError, match="k=5"):
        top_k_rows(scores[:4], 5)


def test_top_k_anneals_by_gamma_per_epoch_down_to_nu():
    assert top_k_count(64, 0, 0.99, 0.5) == 64
    assert top_k_count(64, 10, 0.99, 0.5) == math.ceil(0.99 ** 10 * 64) == 58
    assert top_k_count(64, 100, 0.99, 0.5) == 32
    assert top_k_count(3, 5, 0.5, 0.01) == 1


def test_top_k_g_loss_uses_only_the_k_best_fakes(monkeypatch):
    """With top_k, G's loss is the loss of the k fakes D scores highest: at epoch 1 with γ = 0.5,
    the best 4 of 8."""
    torch.manual_seed(0)
    model = GAN(data_shape=(2,), arch="mlp", width=8, latent_dim=2, g_norm="none", d_norm="none",
                top_k=True, top_k_gamma=0.5, top_k_min=0.25, init_std=1.0, loss="wasserstein")
    state = model.rng.state_dict()
    monkeypatch.setattr(GAN, "global_step", property(lambda self: 5))
    model._trainer = SimpleNamespace(num_training_batches=4)  # G iteration 5 of 4-batch epochs: epoch 1
    loss, _ = model.g_loss(Batch(torch.zeros(8, 2)))
    model.rng.load_state_dict(state)
    scores = model.discriminate(model.generator(model.sample_latent(8), None), None).reshape(-1)
    best4 = scores.topk(4).values
    assert loss.item() == pytest.approx(-best4.mean().item(), rel=1e-6)  # WGAN's G loss: −E[D(G(z))]
    assert loss.item() < -scores.mean().item() - 1.0


# ------------------------------------------------------------------------------ in a fit
def test_levers_compose_with_populations_replica_equals_its_fit(tmp_path):
    """LeCam, zCR (both terms) and top-k in a population of 2 with packing: replica 1 equals the
    ordinary fit with its seed (every lever's state and draws are per replica)."""
    pop = fit(tmp_path / "pop", "pacgan_ring", 5, "--model.init_args.population", "2", *PACKED, *LEVERS)
    one = fit(tmp_path / "one", "pacgan_ring", 6, *PACKED, *LEVERS)
    assert_replica_equals(pop, 1, one, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pop["state_dict"]["lecam.real"][1:], one["state_dict"]["lecam.real"])
    assert one["state_dict"]["lecam.real"].shape == (1,)


def test_levers_change_the_fit_and_resume_exactly(tmp_path):
    plain = fit(tmp_path / "plain", "gan", 3, steps=8)
    straight = assert_resume_exact(tmp_path, "gan", 3, LEVERS, steps=8)
    assert not torch.equal(plain["state_dict"]["generator.out.weight"], straight["state_dict"]["generator.out.weight"])
    assert straight["state_dict"]["lecam.steps"].item() == 8


@pytest.mark.parametrize("config, args, message", [
    ("stackgan", ["--data.dataset", "digits", "--data.resolution", "16", "--model.init_args.stage1_resolution", "8",
                  "--model.init_args.lecam_weight", "1"],
     "model.lecam_weight=1.0 regularizes D's scores in the base D loss, which the stackgan family replaces"),
    ("unrolled", ["--data.dataset", "ring8", "--model.init_args.arch", "mlp", "--model.init_args.top_k", "true"],
     "model.top_k=True regularizes D's scores in the base G loss, which the unrolled family replaces"),
])
def test_levers_refuse_families_with_their_own_loss(tmp_path, capsys, config, args, message):
    """A family whose own losses do not declare the levers on D's scores (StackGAN's matching-aware D
    loss, the Unrolled GAN's G loss through the unrolled D) refuses them."""
    code = main(["fit", "--config", f"configs/{config}.yaml", "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.max_steps", "1", *args])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_augmentation_refuses_image_to_image_families(tmp_path, capsys):
    code = main(["fit", "--config", "configs/pix2pix.yaml", "--trainer.default_root_dir", str(tmp_path),
                 "--model.init_args.augment", "diffaugment", "--trainer.max_steps", "1"])
    assert code == EXIT_USAGE
    assert "model.augment=diffaugment is not supported by pix2pix: its discriminator scores (input, output)" in \
        capsys.readouterr().err


def test_levers_refuse_bad_values_and_vector_data(tmp_path, capsys):
    base = ["fit", "--config", "configs/gan.yaml", "--trainer.default_root_dir", str(tmp_path), "--data.dataset",
            "ring8", "--trainer.max_steps", "1"]
    assert main([*base, "--model.init_args.top_k_gamma", "0"]) == EXIT_USAGE
    assert "model.top_k_gamma must be in (0, 1], got 0.0" in capsys.readouterr().err
    assert main([*base, "--model.init_args.augment", "diffaugment"]) == EXIT_USAGE
    assert "model.augment=diffaugment transforms images, but the data are 1-D vectors (2,)" in capsys.readouterr().err
    assert main([*base, "--data.train_samples", "100"]) == EXIT_USAGE
    assert "data.train_samples=100 limits image data sets" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


# ------------------------------------------------------------------------------ limited data and overfitting
def test_train_samples_serves_exactly_a_fixed_subset():
    dm = GANDataModule("digits", resolution=8, batch_size=50, train_samples=200)
    dm.setup()
    full = dm._split("train")[0]
    idx = dm.training_subset()
    assert len(idx) == 200 and len(set(idx.tolist())) == 200
    assert torch.equal(idx, GANDataModule("digits", resolution=8, train_samples=200, seed=9).training_subset())
    seen = torch.cat([x for x, _ in dm.train_dataloader()])
    assert len(seen) == 200  # 4 batches of 50, every subset image once per epoch
    flat = {tuple(r.tolist()) for r in seen.reshape(200, -1)}
    assert flat == {tuple(r.tolist()) for r in full[idx].reshape(200, -1)}
    train = dm.training_samples(64, seed=3)
    assert {tuple(r.tolist()) for r in train.reshape(64, -1)} <= flat
    with pytest.raises(GanbenchError, match="data.train_samples=200"):
        dm.training_samples(300)


class _MeanD(torch.nn.Module):
    def forward(self, x, labels=None):
        return x.reshape(len(x), -1).mean(1, keepdim=True)


def test_overfit_signal_is_the_ratio_of_mean_scores():
    """D = mean pixel; train reals 1, held-out 0.5, fakes 0 → r_v = (1 − 0.5)/(1 − 0) = 0.5."""
    model = SimpleNamespace(discriminator=_MeanD(), device=torch.device("cpu"), population=1, latent_dim=3,
                            cfg=SimpleNamespace(pack=1), packed=lambda x: x,
                            sample=lambda n, z, ema: torch.zeros(n, 1, 4, 4))
    dm = SimpleNamespace(train_samples=None, split_size=lambda split: 10_000,
                         training_samples=lambda n, seed: torch.ones(n, 1, 4, 4),
                         real_samples=lambda n, split, seed: torch.full((n, 1, 4, 4), 0.5))
    cb = DiscriminatorOverfit(n=100)
    values = cb.measure(SimpleNamespace(datamodule=dm), model)
    assert values == {"diag/d_train_100": 1.0, "diag/d_heldout_100": 0.5, "diag/d_fake_100": 0.0,
                      "diag/d_overfit_100": 0.5}


def test_overfit_signal_is_logged_during_a_fit(tmp_path):
    root = tmp_path / "run"
    fit(root, "gan", 0, "--run.diagnostics_every", "5", steps=10)
    header = (root / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"diag/d_train_512", "diag/d_heldout_512", "diag/d_fake_512", "diag/d_overfit_512"} <= set(header)
    summary = json.loads((root / "summary.json").read_text())
    assert math.isfinite(summary["metrics"]["diag/d_overfit_512"])


IMAGES = ["--data.dataset", "digits", "--data.resolution", "8", "--model.init_args.arch", "mlp",
          "--model.init_args.width", "16", "--model.init_args.latent_dim", "4"]


@pytest.mark.parametrize("extra", [
    ["--model.init_args.augment", "diffaugment", "--model.init_args.cr_real", "10", "--model.init_args.cr_fake", "5"],
    ["--model.init_args.augment", "ada", "--model.init_args.ada_kimg", "1"],
], ids=["diffaugment+bcr", "ada"])
def test_augmentation_and_cr_compose_with_populations(tmp_path, extra):
    """Images through MLPs (what a population batches): replica 0 of a population (seeds 5, 6) with
    DiffAugment and bCR, or ADA, equals the ordinary fit with seed 5, ADA's p included."""
    pop = fit(tmp_path / "pop", "gan", 5, "--model.init_args.population", "2", *IMAGES, *extra, steps=10)
    one = fit(tmp_path / "one", "gan", 5, *IMAGES, *extra, steps=10)
    assert_replica_equals(pop, 0, one, rtol=1e-4, atol=1e-5)
    if "ada" in extra:
        torch.testing.assert_close(pop["state_dict"]["ada.p"][:1], one["state_dict"]["ada.p"])
        assert one["state_dict"]["ada.p"].item() > 0  # p moved: the comparison is not of two zeros
