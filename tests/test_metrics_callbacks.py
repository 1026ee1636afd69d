"""Metric callbacks inside a real Lightning fit (CPU), with a tiny GAN that honours GANModule's API."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn.utils import parametrizations

from ganbench.callbacks.metrics import Diagnostics, ImageMetrics, ToyMetrics, grad_norm, spectral_sigmas
from ganbench.data import GANDataModule
from ganbench.metrics import density_coverage, frechet_distance, load_feature_net, mean_and_covariance, mode_metrics
from ganbench.metrics.features import DomainCNN, save_domain_net
from ganbench.metrics.reference import extract_features, reference_statistics
from ganbench.metrics.sampling import generate


class TinyGAN(L.LightningModule):
    """Manual-optimization GAN with the attributes and sampling methods the callbacks rely on."""

    def __init__(self, data_shape: tuple, latent_dim: int = 8, sn: bool = True) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.latent_dim, self.num_classes, self.data_shape = latent_dim, 0, tuple(data_shape)
        out = math.prod(data_shape)
        self.generator = nn.Sequential(nn.Linear(latent_dim, 32), nn.ReLU(), nn.Linear(32, out), nn.Tanh())
        wrap = parametrizations.spectral_norm if sn else (lambda layer: layer)
        self.discriminator = nn.Sequential(wrap(nn.Linear(out, 32)), nn.ReLU(), wrap(nn.Linear(32, 1)))
        self.ema_generator = None

    def sample_latent(self, n, generator=None):
        return torch.randn(n, self.latent_dim, device=self.device, generator=generator)

    @torch.no_grad()
    def sample(self, n, z=None, labels=None, ema=True):
        z = self.sample_latent(n) if z is None else z
        return self.generator(z).reshape(n, *self.data_shape)

    def training_step(self, batch, batch_idx):
        g_opt, d_opt = self.optimizers()
        x = batch[0].flatten(1)
        fake = self.generator(self.sample_latent(len(x)))
        d_loss = (
            nn.functional.softplus(-self.discriminator(x)).mean()
            + nn.functional.softplus(self.discriminator(fake.detach())).mean()
        )
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        g_loss = nn.functional.softplus(-self.discriminator(self.generator(self.sample_latent(len(x))))).mean()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()

    def configure_optimizers(self):
        return [
            torch.optim.Adam(self.generator.parameters(), 1e-3),
            torch.optim.Adam(self.discriminator.parameters(), 1e-3),
        ]


def trainer(tmp_path, callbacks, batches: int = 2) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        max_steps=2 * batches,
        callbacks=callbacks,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )


@pytest.fixture
def digits_net(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_domain_net(DomainCNN(1, 8, 10), "digits", accuracy=0.0)


def test_image_metrics_log_protocol_keys_and_match_an_independent_computation(tmp_path, digits_net):
    dm = GANDataModule("digits", resolution=8, batch_size=32)
    torch.manual_seed(0)
    model = TinyGAN(dm.shape)
    cb = ImageMetrics(every_n_steps=1, n_fake=200, features="digits", n_real=300, swd_samples=150)
    trainer(tmp_path, [cb]).fit(model, datamodule=dm)
    logged = {k: float(v) for k, v in trainer_metrics(model).items() if k.startswith("val/")}
    assert sorted(logged) == sorted(
        [
            "val/fd_digits_200",
            "val/fd_digits_200_std_5x40",  # FD's spread over 5 disjoint subsets of 40 samples
            "val/is_digits_200",
            "val/is_digits_200_std_10x20",
            "val/kid_digits_200",
            "val/kid_digits_200_std_100x200",  # KID subsets of min(1000, 200, 300)
            "val/precision_digits_200",
            "val/recall_digits_200",
            "val/density_digits_200",
            "val/coverage_digits_200",
            "val/swd_pixels_150_128p",  # min(n_fake 200, n_real 300, swd_samples 150) points per side
            "val/swd_digits_150_128p",
        ]
    )
    net = load_feature_net("digits")
    assert cb.protocol["feature_sha256"] == net.sha256
    assert {k: cb.protocol[k] for k in ("features", "n_real", "n_fake", "split", "resolution", "dataset")} == {
        "features": "digits",
        "n_real": 300,
        "n_fake": 200,
        "split": "train",
        "resolution": 8,
        "dataset": "digits",
    }
    # the same 200 samples measured by hand against the same reference
    ref = reference_statistics(dm, net, 300)
    fake = torch.cat(list(generate(model, 200, 250, seed=0, ema=True)))
    feats = extract_features(net, fake)["features"]
    mu, sigma = mean_and_covariance(feats)
    assert logged["val/fd_digits_200"] == pytest.approx(frechet_distance(mu, sigma, ref.mu, ref.sigma), rel=1e-5)
    # sample g in subset g mod 5
    fds = [frechet_distance(*mean_and_covariance(feats[j::5]), ref.mu, ref.sigma) for j in range(5)]
    assert logged["val/fd_digits_200_std_5x40"] == pytest.approx(float(np.std(fds)), rel=1e-5)
    d, c = density_coverage(ref.features, feats)
    assert (logged["val/density_digits_200"], logged["val/coverage_digits_200"]) == pytest.approx((d, c), abs=1e-6)


def trainer_metrics(model):
    return model.trainer.callback_metrics


def test_toy_metrics_log_and_save_the_scatter(tmp_path):
    dm = GANDataModule("ring8", batch_size=64, n_toy_samples=512)
    torch.manual_seed(0)
    model = TinyGAN((2,))
    cb = ToyMetrics(every_n_steps=2, n_fake=300, w1_samples=200)
    trainer(tmp_path, [cb]).fit(model, datamodule=dm)
    logged = {k: float(v) for k, v in model.trainer.callback_metrics.items() if k.startswith("val/")}
    # every key names its sample count: 300 generated samples, W1 on min(300, 200) points
    assert sorted(logged) == ["val/high_quality_frac_300", "val/kl_modes_300", "val/modes_covered_300",
                              "val/w1_exact_200"]
    fake = torch.cat(list(generate(model, 300, 4096, 0, True)))
    mm = mode_metrics(fake, dm.mixture.centers, dm.mixture.std)
    assert logged["val/modes_covered_300"] == mm["modes_covered"]
    assert logged["val/kl_modes_300"] == pytest.approx(mm["kl_to_uniform"], rel=1e-6)
    pngs = sorted(p.name for p in (tmp_path / "samples").glob("toy_step_*.png"))
    assert pngs == ["toy_step_0000000.png", "toy_step_0000002.png", "toy_step_0000004.png"]  # G at init too


def test_diagnostics_log_grad_norms_and_spectral_sigmas(tmp_path):
    dm = GANDataModule("digits", resolution=8, batch_size=32)
    torch.manual_seed(0)
    model = TinyGAN(dm.shape)
    trainer(tmp_path, [Diagnostics(every_n_steps=2)]).fit(model, datamodule=dm)
    logged = {k: float(v) for k, v in model.trainer.callback_metrics.items() if k.startswith("diag/")}
    assert sorted(logged) == [
        "diag/grad_norm_d",
        "diag/grad_norm_g",
        "diag/sn_sigma/discriminator.0",
        "diag/sn_sigma/discriminator.2",
    ]
    # nothing ran forward after the last log: the logged sigma is the module's current estimate
    assert logged["diag/sn_sigma/discriminator.0"] == pytest.approx(spectral_sigmas(model.discriminator)["0"])


def test_grad_norm_is_the_total_l2_norm_of_an_optimizers_gradients():
    g_param, d_param = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    g_opt, d_opt = torch.optim.SGD([g_param], 0.1), torch.optim.SGD([d_param], 0.1)
    g_param.grad, d_param.grad = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0, 2.0])
    assert (grad_norm(g_opt), grad_norm(d_opt)) == (5.0, 3.0)
    assert grad_norm(torch.optim.SGD([nn.Parameter(torch.zeros(1))], 0.1)) == 0.0  # no gradient yet


def test_diagnostics_grad_norms_are_what_the_last_d_and_g_updates_applied():
    """Read at the end of a G iteration, the norms equal those each optimizer's last ``step()`` saw
    (recorded by torch's optimizer step pre-hooks, after the module's gradient clipping), and reading
    them there leaves the module free to skip Lightning's per-step hook dispatch."""
    from ganbench.models import SNGAN

    seen: dict[int, list[float]] = {0: [], 1: []}

    class Record(L.Callback):
        def on_train_start(self, trainer, pl_module):
            for i, opt in enumerate(trainer.optimizers):
                opt.register_step_pre_hook(lambda o, args, kwargs, i=i: seen[i].append(grad_norm(o)))

    L.seed_everything(0, verbose=False)
    dm = GANDataModule("ring8", n_toy_samples=512, batch_size=16)
    model = SNGAN(data_shape=dm.shape, latent_dim=8, width=16, grad_clip=0.05)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[Record(), Diagnostics(every_n_steps=3)])
    trainer.fit(model, dm)
    assert model._direct_steps is True
    assert (len(seen[0]), len(seen[1])) == (3, 3 * model.n_critic)
    assert max(seen[0] + seen[1]) <= 0.05 + 1e-6  # clipped before the step
    logged = trainer.callback_metrics
    assert float(logged["diag/grad_norm_g"]) == pytest.approx(seen[0][-1], rel=1e-6)
    assert float(logged["diag/grad_norm_d"]) == pytest.approx(seen[1][-1], rel=1e-6)


def test_spectral_sigma_converges_to_the_largest_singular_value():
    torch.manual_seed(0)
    layer = parametrizations.spectral_norm(nn.Linear(6, 5))
    for _ in range(200):
        layer(torch.zeros(1, 6))  # each training-mode forward runs one power iteration
    w = layer.parametrizations.weight.original
    assert spectral_sigmas(layer)[""] == pytest.approx(float(torch.linalg.matrix_norm(w, 2)), rel=1e-5)


def test_image_metrics_under_two_process_ddp_count_the_reference_once(tmp_path, digits_net):
    dm = GANDataModule("digits", resolution=8, batch_size=32)
    torch.manual_seed(0)
    model = TinyGAN(dm.shape, sn=False)  # parametrized modules cannot be pickled for ddp_spawn
    cb = ImageMetrics(every_n_steps=1, n_fake=200, features="digits", n_real=300, metrics=["fd"])
    t = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        callbacks=[cb],
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn_find_unused_parameters_true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    t.fit(model, datamodule=dm)
    logged = float(t.callback_metrics["val/fd_digits_200"])
    # rank r generated 100 samples from seed r with label offset 100 r; the reference entered once
    net = load_feature_net("digits")
    ref = reference_statistics(dm, net, 300)
    fake = torch.cat([*generate(model, 100, 250, seed=0, ema=True), *generate(model, 100, 250, seed=1, ema=True)])
    feats = extract_features(net, fake)["features"]
    mu, sigma = mean_and_covariance(feats)
    assert logged == pytest.approx(frechet_distance(mu, sigma, ref.mu, ref.sigma), rel=1e-5)
    # FD's subsets follow the global sample number across the two ranks: sample g in subset g mod 5
    fds = [frechet_distance(*mean_and_covariance(feats[j::5]), ref.mu, ref.sigma) for j in range(5)]
    assert float(t.callback_metrics["val/fd_digits_200_std_5x40"]) == pytest.approx(float(np.std(fds)), rel=1e-5)
