"""Energy-based, margin and kernel families (EBGAN, BEGAN, MAGAN, Loss-Sensitive GAN, MMD-GAN) and the
autoencoder discriminator: CPU fits through the CLI, and each family's objective checked against the
pure functions of :mod:`ganbench.losses` it is built from."""

import csv
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from ganbench import GanbenchError
from ganbench.losses import (
    began_convergence,
    began_k_update,
    d_loss_sensitive,
    g_ebgan,
    ls_margin,
    magan_margin_update,
    mmd2_unbiased,
    pullaway_term,
)
from ganbench.models import BEGAN, EBGAN, FAMILIES, MAGAN, MMDGAN, LossSensitiveGAN
from ganbench.models.base import Batch
from ganbench.nn.autoencoder import ENERGIES, ConvAutoencoder, MLPAutoencoder, autoencoder
from tests.conftest import needs_fmnist
from tests.tiny import CPU, RING8_2000, SMALL, tiny_fit

FAMILY_CLASSES = {"ebgan": EBGAN, "began": BEGAN, "magan": MAGAN, "loss_sensitive": LossSensitiveGAN,
                  "mmdgan": MMDGAN}
TINY = [*SMALL, *CPU, "--run.sample_every", "2", "--run.checkpoint_every", "2", "--trainer.log_every_n_steps", "1",
        "--run.metrics_every", "0"]
RING8 = RING8_2000


def fit(root: Path, family: str, *args: str, steps: int = 3) -> dict:
    """summary.json of a tiny fit of ``configs/<family>.yaml``."""
    return tiny_fit(root, family, *args, steps=steps, base=TINY).summary


def rows(root: Path) -> list[dict[str, str]]:
    with open(root / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("train/g_loss")]


# ------------------------------------------------------------------------------------------- fits
def test_every_family_is_registered():
    assert {name: FAMILIES[name] for name in FAMILY_CLASSES} == FAMILY_CLASSES


@pytest.mark.parametrize("family", sorted(FAMILY_CLASSES))
def test_fit_on_ring8(family, tmp_path):
    summary = fit(tmp_path / "run", family, *RING8, steps=3)
    assert (summary["status"], summary["family"], summary["g_steps"]) == ("completed", family, 3)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    n_critic = FAMILY_CLASSES[family](data_shape=(2,)).n_critic
    assert (ckpt["global_step"], ckpt["ganbench"]["d_steps"]) == (3, 3 * n_critic)


@needs_fmnist
@pytest.mark.parametrize("family", sorted(FAMILY_CLASSES))
def test_fit_on_fashion_mnist_16(family, tmp_path):
    summary = fit(tmp_path / "run", family, "--data.resolution", "16", "--run.image_metrics_n", "64", steps=2)
    assert (summary["status"], summary["family"], summary["g_steps"]) == ("completed", family, 2)
    from ganbench.models import load_module

    x = load_module(tmp_path / "run" / "checkpoints" / "last.ckpt").sample(3)
    assert x.shape == (3, 1, 16, 16)


# ------------------------------------------------------------------------------------ autoencoder
@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_conv_autoencoder_reconstructs_the_input_shape(resolution):
    ae = ConvAutoencoder(shape=(3, resolution, resolution), width=4, norm="batch", code_dim=5)
    x = torch.randn(6, 3, resolution, resolution)
    assert ae.reconstruct(x).shape == x.shape
    assert ae.features(x).shape == (6, 5)
    energy, code = ae.energy_and_code(x)
    assert energy.shape == (6,) and code.shape == (6, 5)
    assert torch.equal(energy, (ae.reconstruct(x) - x).pow(2).flatten(1).mean(1))


def test_mlp_autoencoder_energy_is_the_mean_error_per_sample():
    ae = MLPAutoencoder(shape=(2,), width=8, code_dim=3, energy="l1")
    x = torch.randn(7, 2)
    assert ae.reconstruct(x).shape == (7, 2)
    assert torch.equal(ae(x), (ae.reconstruct(x) - x).abs().mean(1))


def test_energy_of_a_perfect_reconstruction_is_zero():
    x = torch.randn(4, 1, 8, 8)
    for name, energy in ENERGIES.items():
        assert torch.equal(energy(x, x), torch.zeros(4)), name
    # closed forms: every element off by 0.5 → l1 = 0.5, mse = 0.25 (exact in binary floating point)
    assert torch.equal(ENERGIES["l1"](x + 0.5, x), torch.full((4,), 0.5))
    assert torch.equal(ENERGIES["mse"](torch.zeros(4, 3), torch.full((4, 3), 0.5)), torch.full((4,), 0.25))
    ae = MLPAutoencoder(shape=(1, 8, 8), width=8)
    ae.encoder, ae.decoder = torch.nn.Flatten(1), torch.nn.Identity()  # an identity path through D
    energy, code = ae.energy_and_code(x)
    assert torch.equal(energy, torch.zeros(4)) and torch.equal(code, x.flatten(1))


def test_autoencoder_table_names_the_key():
    with pytest.raises(GanbenchError, match=r"^model.arch='resnet' has no autoencoder discriminator; choose one of: "
                                            r"auto, cnn, mlp$"):
        autoencoder("resnet", shape=(1, 16, 16))
    with pytest.raises(GanbenchError, match=r"^model.energy='l2' is not valid; choose one of: mse, l1$"):
        MLPAutoencoder(energy="l2")


# --------------------------------------------------------------------------------------- families
def test_ebgan_generator_loss_is_energy_plus_pulling_away():
    torch.manual_seed(0)
    m = EBGAN(data_shape=(2,), latent_dim=2, width=8, d_norm="none", g_norm="none")
    real = torch.randn(6, 2)
    again = replay(m)  # the module draws its latents from its own generator
    loss, logs = m.g_loss(Batch(real))
    again()
    energy, code = m.discriminator.energy_and_code(m.generate(6, None))
    assert torch.equal(loss, g_ebgan(energy) + 0.1 * pullaway_term(code))
    assert torch.equal(logs["pullaway"], pullaway_term(code).detach())


def replay(module):
    """The module draws latents from its own generator: a function that puts that generator back to
    where it is now, so the same draws can be made again."""
    state = module.rng.state_dict()
    return lambda: module.rng.load_state_dict(state)


def attach_trainer(module):
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, max_steps=100)
    trainer.strategy.connect(module)
    module.trainer = trainer
    return module


def test_began_k_follows_the_proportional_control_and_resumes(tmp_path):
    """k replayed from k_0 = 0 with began_k_update on the logged energies equals the logged k at every step,
    across a resume from last.ckpt (a k reset to 0 on resume would break the replay at step 3)."""
    root = tmp_path / "run"
    fit(root, "began", *RING8, "--model.init_args.lambda_k", "1.0", steps=2)
    first = rows(root)
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["ganbench"]["began_k"] == \
        float(first[-1]["train/began_k"])
    fit(root, "began", *RING8, "--model.init_args.lambda_k", "1.0", "--ckpt_path", "last", steps=4)
    logged = rows(root)  # the resumed run continues metrics.csv: the first segment's rows stay
    assert logged[:2] == first and [int(r["step"]) for r in logged] == [1, 2, 3, 4]
    k = 0.0
    for r in logged:
        real = torch.tensor(float(r["train/began_energy_real"]))
        fake = torch.tensor(float(r["train/began_energy_fake"]))
        k = began_k_update(k, real, fake, 0.5, 1.0)
        assert float(r["train/began_k"]) == k
        assert 0.0 <= k <= 1.0
        assert float(r["train/began_m_global"]) == float(began_convergence(real, fake, 0.5))
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["ganbench"]["began_k"] == k


def test_began_k_is_clipped_to_the_unit_interval():
    m = attach_trainer(BEGAN(data_shape=(2,), latent_dim=2, width=8, lambda_k=10.0))
    m.logging_step = lambda: False  # outside a fit loop nothing can be logged
    for real, fake, expected in [(4.0, 0.0, 1.0), (4.0, 0.0, 1.0), (0.0, 3.0, 0.0), (1.0, 0.46875, 0.3125)]:
        m._energy_real, m._energy_fake = torch.tensor(real), torch.tensor(fake)
        m.after_g_step()
        assert m.k == expected  # dyadic energies: exact


def magan_recorder(monkeypatch, force: bool) -> list[tuple]:
    """Record every margin update as (G iteration, margin, S_real, S_fake); with ``force`` the margin adopts
    S_real whatever the rule says, so the time of every update shows in the logged margin."""
    import ganbench.models.magan as magan

    steps: list[int] = []
    calls: list[tuple] = []

    def update(margin, s_real, s_fake):
        calls.append((steps[-1], margin, s_real, s_fake))
        return s_real if force else magan_margin_update(margin, s_real, s_fake)

    original = magan.MAGAN.adapt_margin

    def adapt(self):
        steps.append(self.global_step)
        original(self)

    monkeypatch.setattr(magan, "magan_margin_update", update)
    monkeypatch.setattr(magan.MAGAN, "adapt_margin", adapt)
    return calls


def test_magan_margin_adapts_every_n_g_iterations(tmp_path, monkeypatch):
    calls = magan_recorder(monkeypatch, force=True)
    root = tmp_path / "run"
    fit(root, "magan", *RING8, "--model.init_args.margin_every", "2", steps=5)
    logged = rows(root)
    real = [float(r["train/energy_real"]) for r in logged]
    fake = [float(r["train/energy_fake"]) for r in logged]
    m0 = real[0]  # initial margin: the mean real energy of the first D batch
    m2 = (real[0] + real[1]) / 2
    m4 = (real[2] + real[3]) / 2
    assert calls == [(2, m0, m2, (fake[0] + fake[1]) / 2), (4, m2, m4, (fake[2] + fake[3]) / 2)]
    assert [float(r["train/magan_margin"]) for r in logged] == [m0, m2, m2, m4, m4]
    state = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["ganbench"]["magan"]
    assert state == {"margin": m4, "window": [real[4], fake[4], 1.0]}


def test_magan_margin_adapts_at_the_epoch_end(tmp_path, monkeypatch):
    """32 toy points in batches of 8: an epoch is 4 G iterations, so the margin changes once, after step 4."""
    calls = magan_recorder(monkeypatch, force=False)
    root = tmp_path / "run"
    fit(root, "magan", "--data.dataset", "ring8", "--data.n_toy_samples", "32", "--model.init_args.margin", "50",
        steps=6)
    logged = rows(root)
    real = [float(r["train/energy_real"]) for r in logged]
    fake = [float(r["train/energy_fake"]) for r in logged]
    s_real, s_fake = sum(real[:4]) / 4, sum(fake[:4]) / 4
    assert calls[0] == (4, 50.0, s_real, s_fake)
    new = magan_margin_update(50.0, s_real, s_fake)
    assert [float(r["train/magan_margin"]) for r in logged[:5]] == [50.0] * 3 + [new] * 2


def test_magan_margin_update_rule_in_isolation():
    m = attach_trainer(MAGAN(data_shape=(2,), latent_dim=2, width=8, margin=1.0, d_norm="none", g_norm="none"))
    m.magan_window = torch.tensor([0.5, 1.5, 2.0], dtype=torch.float64)  # S_real 0.25 < S_fake 0.75, < m
    m.adapt_margin()
    assert m.margin == 0.25 and torch.equal(m.magan_window, torch.zeros(3, dtype=torch.float64))
    m.magan_window = torch.tensor([0.4, 0.2, 2.0], dtype=torch.float64)  # S_real 0.2 > S_fake 0.1: unchanged
    m.adapt_margin()
    assert m.margin == 0.25


def test_loss_sensitive_d_loss_is_the_margin_objective():
    torch.manual_seed(0)
    m = LossSensitiveGAN(data_shape=(2,), latent_dim=2, width=8, penalty="none", lam=0.7)
    real = torch.randn(6, 2)
    again = replay(m)  # the module draws its latents from its own generator
    loss, logs = m.d_loss(Batch(real))
    again()
    fake = m.generate(6, None)
    expected = d_loss_sensitive(m.discriminator(real), m.discriminator(fake), ls_margin(real, fake), 0.7)
    assert torch.equal(loss, expected)
    assert torch.equal(logs["ls_margin"], ls_margin(real, fake))  # per sample: reduced on the steps that log


def test_mmdgan_g_loss_is_the_unbiased_mmd_of_the_critic_features():
    torch.manual_seed(0)
    m = MMDGAN(data_shape=(2,), latent_dim=2, width=8, penalty="none")
    m.generator.requires_grad_(False)
    real = torch.randn(8, 2)
    again = replay(m)  # the module draws its latents from its own generator
    loss, _ = m.g_loss(Batch(real))
    again()
    fake = m.generate(8, None)
    phi_real, phi_fake = m.discriminator(real), m.discriminator(fake)
    assert phi_real.shape == (8, 16)
    assert torch.equal(loss, mmd2_unbiased(phi_real, phi_fake, kernel="rq"))
    again()
    d_loss, logs = m.d_loss(Batch(real))
    assert torch.equal(d_loss, -mmd2_unbiased(phi_real, phi_fake)) and torch.equal(logs["mmd2"], -d_loss.reshape(1))


def test_mmdgan_penalty_is_taken_on_the_witness_function():
    """With ``witness(x̂)`` written out by hand, the penalty equals regularizers.gradient_penalty of it."""
    from ganbench.losses import mixture_kernel
    from ganbench.regularizers import gradient_penalty

    torch.manual_seed(0)
    m = MMDGAN(data_shape=(2,), latent_dim=2, width=8, penalty_weight=1.0)
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    phi_r, phi_f = m.discriminator(real), m.discriminator(fake)
    state = m.rng.state_dict()  # the interpolation draws from the module's (the replica's) stream
    got = m.witness_penalty(real, fake, phi_r, phi_f)
    m.rng.load_state_dict(state)

    def witness(x):
        phi = m.discriminator(x)
        return mixture_kernel(phi, phi_r).mean(1) - mixture_kernel(phi, phi_f).mean(1)

    expected = gradient_penalty(witness, real, fake, generator=m.rng.generators[0])
    assert torch.equal(got, expected)
