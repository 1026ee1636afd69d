"""The logit-based families (GAN, DCGAN, WGAN, WGAN-GP, LSGAN, DRAGAN, Softmax GAN, f-GAN, cGAN, Unrolled GAN):
each trains through ``ganbench fit``, each config states its paper's defaults, and each family's own
mechanism (clipping, least-squares targets, divergences, class conditioning, unrolling) is checked exactly."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ganbench.cli import EXIT_USAGE, GanbenchCLI, main
from ganbench.losses import LOSSES
from ganbench.models import CGAN, FAMILIES, FGAN, LSGAN, WGAN, UnrolledGAN, load_module
from ganbench.models.base import Batch
from tests.conftest import needs_fmnist
from tests.tiny import RING8, TINY, tiny_fit

#: config → (family, n_critic, optimizer class, optimizer kwargs that the paper fixes)
PAPER = {
    "gan": ("gan", 1, torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
    "dcgan": ("dcgan", 1, torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
    "wgan": ("wgan", 5, torch.optim.RMSprop, {"lr": 5e-5}),
    "wgan_gp": ("wgan_gp", 5, torch.optim.Adam, {"lr": 1e-4, "betas": (0.0, 0.9)}),
    "lsgan": ("lsgan", 1, torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
    "dragan": ("dragan", 1, torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.9)}),
    "softmax_gan": ("softmax_gan", 1, torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
    "fgan": ("fgan", 1, torch.optim.Adam, {"lr": 2e-4, "betas": (0.5, 0.999)}),
    "cgan": ("cgan", 5, torch.optim.Adam, {"lr": 2e-4, "betas": (0.0, 0.9)}),
    "unrolled": ("unrolled", 1, torch.optim.Adam, {"lr": 1e-4, "betas": (0.5, 0.999)}),
}
#: config → (loss table entry, penalty, D norm, image architecture)
OBJECTIVES = {
    "gan": ("ns", "none", "none", "mlp"), "dcgan": ("ns", "none", "batch", "dcgan"),
    "wgan": ("wasserstein", "none", "batch", "dcgan"), "wgan_gp": ("wasserstein", "gp", "none", "resnet"),
    "lsgan": ("ls", "none", "batch", "cnn"), "dragan": ("ns", "dragan", "none", "dcgan"),
    "softmax_gan": ("softmax", "none", "batch", "dcgan"), "fgan": ("fgan_js", "none", "batch", "dcgan"),
    "cgan": ("hinge", "none", "spectral", "resnet"), "unrolled": ("ns", "none", "none", "dcgan"),
}


def summary_and_ckpt(root: Path) -> tuple[dict, dict]:
    return (json.loads((root / "summary.json").read_text()),
            torch.load(root / "checkpoints" / "last.ckpt", weights_only=False))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_config_states_the_paper_defaults(name, tmp_path):
    family, n_critic, opt_cls, opt_kw = PAPER[name]
    loss, penalty, d_norm, arch = OBJECTIVES[name]
    cli = GanbenchCLI(args=["--config", f"configs/{name}.yaml", "--trainer.default_root_dir", str(tmp_path)], run=False)
    model = cli.model
    assert type(model) is FAMILIES[family] and model.family == family and model.n_critic == n_critic
    assert model.resolved_arch == arch and model.hparams.d_norm == d_norm and model.hparams.penalty == penalty
    if name != "lsgan":  # LSGAN binds its targets into the "ls" pair (checked below)
        assert model.objective is LOSSES[loss]
    for opt in model.configure_optimizers():
        assert type(opt) is opt_cls
        assert {k: opt.defaults[k] for k in opt_kw} == opt_kw
    assert (cli.datamodule.dataset, cli.datamodule.resolution) == ("fashion_mnist", 32)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_fit_on_ring8(name, tmp_path):
    family, n_critic, _, _ = PAPER[name]
    root = tiny_fit(tmp_path / "run", name, *RING8, steps=2, base=TINY).root
    summary, ckpt = summary_and_ckpt(root)
    assert (summary["status"], summary["family"], summary["g_steps"]) == ("completed", family, 2)
    assert ckpt["global_step"] == 2 and ckpt["ganbench"]["d_steps"] == 2 * n_critic
    assert ckpt["hyper_parameters"]["data_shape"] == (2,)


@needs_fmnist
@pytest.mark.parametrize("name", sorted(PAPER))
def test_fit_on_fashion_mnist(name, tmp_path):
    root = tiny_fit(tmp_path / "run", name, steps=2, base=TINY).root
    summary, ckpt = summary_and_ckpt(root)
    assert (summary["status"], summary["family"], summary["g_steps"]) == ("completed", PAPER[name][0], 2)
    x = load_module(root / "checkpoints" / "last.ckpt").sample(3)
    assert x.shape == (3, 1, 32, 32)


def test_gan_offers_only_the_two_goodfellow_losses(tmp_path, capsys):
    code = main(["fit", "--config", "configs/gan.yaml", "--model.init_args.loss", "hinge",
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ganbench: error: model.init_args.loss: expected one of ns, minimax; got 'hinge' "
                   "(ganbench.models.GAN); ganbench fit --help lists the options"]


def test_wgan_clips_every_critic_weight(tmp_path):
    init = WGAN(data_shape=(2,), width=4)
    assert max(p.abs().max() for p in init.discriminator.parameters()) > 0.01  # clipping has work to do
    root = tiny_fit(tmp_path / "run", "wgan", *RING8, steps=2, base=TINY).root
    critic = load_module(root / "checkpoints" / "last.ckpt").discriminator
    bound = torch.tensor(0.01)
    assert max(p.abs().max() for p in critic.parameters()) == bound  # in [-c, c], and some weight sits on c
    rows = (root / "metrics.csv").read_text().splitlines()
    assert "train/critic_gap" in rows[0].split(",")


def test_wgan_gp_rejects_batch_norm_in_the_critic(tmp_path, capsys):
    code = main(["fit", "--config", "configs/wgan_gp.yaml", "--model.init_args.d_norm", "batch", *RING8,
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ganbench: error: model.d_norm='batch' cannot be combined with model.penalty='gp': the penalty "
                   "is a per-sample gradient norm and batch normalization couples the samples of a batch "
                   "(Gulrajani et al. 2017 §4); use d_norm none, layer, instance or spectral"]
    assert not (tmp_path / "run").exists()


def test_lsgan_targets_reach_the_losses():
    """Eq. 8 coding a=-1, b=1, c=0: D is perfect at D(x)=1, D(G(z))=-1; G's loss is then ½(-1-0)² = ½."""
    model = LSGAN(data_shape=(2,), width=4, a=-1.0, b=1.0, c=0.0)
    real, fake = torch.ones(4), -torch.ones(4)
    assert model.objective.d(real, fake).item() == 0.0
    assert model.objective.g(fake).item() == 0.5
    default = LSGAN(data_shape=(2,), width=4)  # eq. 9: a=0, b=1 → ½(1-1)² + ½(-1-0)² = ½
    assert default.objective.d(real, fake).item() == 0.5 and default.objective.g(fake).item() == 2.0


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "pearson", "hellinger"])
def test_fgan_divergence_selects_its_table_entry(divergence):
    model = FGAN(data_shape=(2,), width=4, divergence=divergence)
    assert model.objective is LOSSES[f"fgan_{divergence}"]


def test_cgan_labels_change_the_generator_output(tmp_path):
    z = torch.randn(4, 128)
    fresh = CGAN(data_shape=(2,), num_classes=8, width=4, g_norm="none")
    ys = [torch.full((4,), k) for k in (0, 1)]
    # conditional gains and biases start at zero: at initialization the class has no effect
    assert torch.equal(fresh.sample(4, z=z, labels=ys[0]), fresh.sample(4, z=z, labels=ys[1]))
    root = tiny_fit(tmp_path / "run", "cgan", *RING8, "--model.init_args.g_norm", "none", steps=2, base=TINY).root
    trained = load_module(root / "checkpoints" / "last.ckpt")
    assert trained.num_classes == 8
    assert not torch.allclose(trained.sample(4, z=z, labels=ys[0]), trained.sample(4, z=z, labels=ys[1]))


def test_acgan_fit_on_ring8(tmp_path):
    root = tiny_fit(tmp_path / "run", "cgan", *RING8, "--model.init_args.mode", "acgan", "--model.init_args.loss", "ns",
                    steps=2, base=TINY).root
    summary, ckpt = summary_and_ckpt(root)
    assert (summary["status"], summary["g_steps"]) == ("completed", 2)
    assert ckpt["hyper_parameters"]["mode"] == "acgan"
    assert {"train/d_class_loss", "train/g_class_loss", "train/d_class_acc"} <= set(summary["metrics"])


def test_acgan_class_loss_has_its_closed_form():
    """Classifier with zero weights and bias b: every logit row is b, so for real and fake labels y
    L_C = 2·mean_i(logsumexp(b) - b[y_i]) (Odena et al. 2017, eq. 2); D ignores the class."""
    torch.manual_seed(0)
    model = CGAN(data_shape=(2,), num_classes=3, width=4, mode="acgan", loss="ns", d_norm="none")
    b = torch.tensor([0.0, math.log(2.0), math.log(5.0)])
    with torch.no_grad():
        model.discriminator.classifier.weight.zero_()
        model.discriminator.classifier.bias.copy_(b)
    y = torch.tensor([0, 1, 2, 2])
    x = torch.randn(4, 2)
    _, logs = model.d_loss(Batch(x, y))
    expected = 2 * (math.log(8.0) - (0 + math.log(2) + 2 * math.log(5)) / 4)
    assert logs["d_class_loss"].item() == pytest.approx(expected, abs=1e-6)
    assert logs["d_class_loss"].item() == pytest.approx(2 * F.cross_entropy(b.expand(4, 3), y).item(), abs=1e-6)
    assert torch.equal(model.discriminator(x, y), model.discriminator(x, torch.zeros_like(y)))


def _unrolled_g_grads(steps: int, **kw) -> tuple[list[torch.Tensor], UnrolledGAN, dict]:
    torch.manual_seed(0)
    model = UnrolledGAN(data_shape=(2,), width=8, latent_dim=4, unroll_steps=steps, **kw)
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    model.discriminator.requires_grad_(False)  # as under toggled_optimizer(g_opt)
    torch.manual_seed(1)
    loss, _ = model.g_loss(Batch(torch.randn(16, 2)))
    loss.backward()
    return [p.grad.clone() for p in model.generator.parameters()], model, before


def test_unrolled_g_step_leaves_d_untouched():
    _, model, before = _unrolled_g_grads(5)
    after = model.discriminator.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.discriminator.parameters())


def test_unrolled_gradient_flows_through_the_unrolling():
    plain, _, _ = _unrolled_g_grads(0)
    unrolled, _, _ = _unrolled_g_grads(5, unroll_optimizer="sgd", unroll_lr=0.5)
    adam, _, _ = _unrolled_g_grads(5, unroll_optimizer="adam")
    frozen, _, _ = _unrolled_g_grads(5, unroll_optimizer="sgd", unroll_lr=0.0)  # θ_D^K = θ_D: the plain gradient
    assert all(torch.allclose(a, b, rtol=0, atol=1e-7) for a, b in zip(plain, frozen))
    assert max((a - b).abs().max() for a, b in zip(plain, unrolled)) > 1e-3
    assert max((a - b).abs().max() for a, b in zip(plain, adam)) > 1e-5
