"""Populations of the families that override step pieces: replica k of a population fit equals the
population-1 fit with seed s + k (the helpers and tolerance of tests/test_population.py), and the
families that cannot be batched refuse with their reason."""

import csv
import json
from pathlib import Path

import pytest
import torch

from ganbench.cli import EXIT_USAGE, main
from ganbench.models import CGAN, CycleGAN, Pix2Pix, StackGAN, UnrolledGAN, load_module
from ganbench.nn.resnet import ResNetDiscriminator, ResNetGenerator
from ganbench.nn.stacking import stack_modules
from tests.conftest import needs_fmnist
from tests.test_img2img import FAST
from tests.test_population import IMAGES, LRS, assert_replica_equals, fit

OVERRIDES = ["--model.init_args.population_overrides", json.dumps([{"g_lr": x, "d_lr": x} for x in LRS])]
LR2 = ["--model.init_args.g_optimizer.init_args.lr", str(LRS[2]),
       "--model.init_args.d_optimizer.init_args.lr", str(LRS[2])]


def assert_replica_logs_equal(pop: Path, k: int, one: Path, keys: tuple[str, ...]) -> None:
    """Every logged ``train/<key>/r<k>`` of the population fit in ``pop`` equals ``train/<key>`` of the
    fit in ``one``, row by row (the same tolerance as the parameters)."""
    rows = [list(csv.DictReader(open(root / "metrics.csv", newline=""))) for root in (pop, one)]
    assert len(rows[0]) == len(rows[1]) > 0
    for mine, theirs in zip(*rows):
        for key in keys:
            got, want = mine[f"train/{key}/r{k}"], theirs[f"train/{key}"]
            assert bool(got) == bool(want), key
            if want:
                torch.testing.assert_close(float(got), float(want), rtol=1e-4, atol=1e-5, msg=key)


def test_stacked_class_conditional_networks_compute_each_replica():
    """Conditional batch norm in G and the spectrally normalized class projection in D: one table per
    replica, each replica's rows looked up in its own."""
    torch.manual_seed(0)
    gs = [ResNetGenerator(8, (1, 16, 16), 4, "batch", num_classes=3) for _ in range(2)]
    ds = [ResNetDiscriminator((1, 16, 16), 4, "spectral", num_classes=3) for _ in range(2)]
    for g in gs:  # conditional norms start at zero gain and bias: make every class differ
        for name, p in g.named_parameters():
            if "embed" in name:
                torch.nn.init.normal_(p)
    G, D = stack_modules(gs), stack_modules(ds)
    z, y = torch.randn(8, 8), torch.randint(3, (8,))
    rows = [slice(4 * r, 4 * r + 4) for r in range(2)]
    x = G(z, y)
    torch.testing.assert_close(x, torch.cat([g(z[i], y[i]) for i, g in zip(rows, gs)]), rtol=1e-4, atol=1e-5)
    x = x.detach()  # D's scores are sums over feature maps: a looser absolute tolerance
    torch.testing.assert_close(D(x, y), torch.cat([d(x[i], y[i]) for i, d in zip(rows, ds)]), rtol=1e-4, atol=1e-4)


#: cGAN's two modes on 16×16 digits (ResNet networks): the projection D (spectral norm, hinge, n_dis 5)
#: and AC-GAN's classifier on D's features (batch norm in D, non-saturating loss, one D step)
CGAN_MODES = {
    "projection": [],
    "acgan": ["--model.init_args.mode", "acgan", "--model.init_args.loss", "ns", "--model.init_args.d_norm", "batch",
              "--model.init_args.n_critic", "1"],
}


@pytest.mark.parametrize("mode", sorted(CGAN_MODES))
def test_cgan_replica_equals_the_fit_with_its_seed(tmp_path, mode):
    """Replica 2 of seeds 5, 6, 7 with its own learning rates: its class-conditional norms, projection
    or classifier, labels and class losses are those of the fit with seed 7 and that learning rate."""
    extra = [*IMAGES, *CGAN_MODES[mode]]
    pop = fit(tmp_path / "pop", "cgan", 5, *extra, "--model.init_args.population", "3", *OVERRIDES, steps=8)
    one = fit(tmp_path / "one", "cgan", 7, *extra, *LR2, steps=8)
    assert_replica_equals(pop, 2, one, rtol=1e-4, atol=1e-5)
    keys = ("d_loss", "g_loss") + (("d_class_loss", "g_class_loss", "d_class_acc") if mode == "acgan" else ())
    assert_replica_logs_equal(tmp_path / "pop", 2, tmp_path / "one", keys)


#: D's β1 per replica: the unrolled Adam steps read each replica's own
BETA1 = [0.5, 0.3, 0.7]


@pytest.mark.parametrize("unroll", ["adam", "sgd"])
def test_unrolled_replica_equals_the_fit_with_its_seed(tmp_path, unroll):
    """Unrolled GAN on the ring (MLPs, K = 5): replica 1 of seeds 5, 6, 7, with its own learning rates
    and D's β1 (both differ from the run's), differentiates through the unrolled steps of its own D —
    its own loss, moments, learning rate and betas — as the fit with seed 6 and those settings does."""
    over = json.dumps([{"g_lr": x, "d_lr": x, "d_beta1": b} for x, b in zip(LRS, BETA1)])
    extra = ["--model.init_args.unroll_optimizer", unroll]
    pop = fit(tmp_path / "pop", "unrolled", 5, *extra, "--model.init_args.population", "3",
              "--model.init_args.population_overrides", over, steps=10)
    one = fit(tmp_path / "one", "unrolled", 6, *extra, "--model.init_args.g_optimizer.init_args.lr", str(LRS[1]),
              "--model.init_args.d_optimizer.init_args.lr", str(LRS[1]),
              "--model.init_args.d_optimizer.init_args.betas", f"[{BETA1[1]}, 0.999]", steps=10)
    assert_replica_equals(pop, 1, one, rtol=1e-4, atol=1e-5)
    assert_replica_logs_equal(tmp_path / "pop", 1, tmp_path / "one", ("d_loss", "g_loss"))

def fit_pairs(root: Path, seed: int, *args: str, steps: int = 6) -> dict:
    """A tiny CycleGAN fit on Fashion-MNIST A/B images (one residual block, pools of 3 images, so the
    pools fill in two D steps and then draw)."""
    assert main(["fit", "--config", "configs/cyclegan.yaml", "--trainer.default_root_dir", str(root),
                 "--seed_everything", str(seed), "--trainer.max_steps", str(steps), *FAST,
                 "--model.init_args.n_blocks", "1", "--model.init_args.pool_size", "3", *args]) == 0
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)


def instance_normed_biases(module: torch.nn.Module) -> set[str]:
    """Keys of the convolution biases that go straight into an instance norm: it subtracts each channel's
    mean, so their gradient is zero in exact arithmetic and Adam turns its rounding noise into full steps
    (as for batch norm, :func:`tests.test_population.noise_only`)."""
    keys = set()
    for name, seq in module.named_modules():
        if isinstance(seq, torch.nn.Sequential):
            for i, (layer, after) in enumerate(zip(seq, list(seq)[1:])):
                if isinstance(after, torch.nn.InstanceNorm2d) and getattr(layer, "bias", None) is not None:
                    keys.add(f"{name}.{i}.bias")
    return keys


@needs_fmnist
def test_cyclegan_replica_equals_the_fit_with_its_seed(tmp_path):
    """Replica 1 of seeds 5, 6, 7 with its own learning rates: its two translators, two patch Ds, pools
    (history and draws), cycle and identity losses are those of the fit with seed 6 and that learning rate."""
    pop = fit_pairs(tmp_path / "pop", 5, "--model.init_args.population", "3", *OVERRIDES)
    one = fit_pairs(tmp_path / "one", 6, "--model.init_args.g_optimizer.init_args.lr", str(LRS[1]),
                    "--model.init_args.d_optimizer.init_args.lr", str(LRS[1]))
    noise = instance_normed_biases(load_module(tmp_path / "one" / "checkpoints" / "last.ckpt"))
    assert len(noise) == 16  # 7 in each translator, 1 in each patch D
    compared = {**one, "state_dict": {k: v for k, v in one["state_dict"].items() if k not in noise}}
    assert_replica_equals(pop, 1, compared, rtol=1e-4, atol=1e-5)
    mine, theirs = pop["ganbench"]["image_pools"][1], one["ganbench"]["image_pools"]
    for k in ("a", "b"):
        assert len(mine[k]["images"]) == len(theirs[k]["images"]) == 3
        torch.testing.assert_close(torch.stack(mine[k]["images"]), torch.stack(theirs[k]["images"]),
                                   rtol=1e-4, atol=1e-5)
    assert_replica_logs_equal(tmp_path / "pop", 1, tmp_path / "one",
                              ("d_loss", "g_loss", "cycle", "identity", "g_adv", "d_a_real", "d_b_fake"))
    replica = load_module(tmp_path / "pop" / "checkpoints" / "last.ckpt", replica=1)  # loads its own pools
    assert len(replica.pools) == 1 and len(replica.pools[0]["b"].images) == 3
    assert all(torch.equal(x, y) for x, y in zip(replica.pools[0]["b"].images, mine["b"]["images"]))


# ---------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("family, reason", [
    (StackGAN, "conditioning augmentation's noise and the matching-aware loss's wrong classes are drawn from the "
               "global random stream"),
    (Pix2Pix, "the U-Net's dropout, G's only noise, draws its masks from the global random stream"),
])
def test_families_that_cannot_be_batched_say_why(family, reason):
    assert family.population_refusal().startswith(f"the {family.family} family cannot be batched: {reason}")


def test_batched_families_declare_their_overrides():
    assert all(f.population_refusal() is None for f in (CGAN, UnrolledGAN, CycleGAN))


def test_a_refusing_family_stops_the_fit_with_one_line(tmp_path, capsys):
    code = main(["fit", "--config", "configs/pix2pix.yaml", "--trainer.default_root_dir", str(tmp_path / "r"),
                 "--trainer.max_steps", "1", *FAST, "--model.init_args.population", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE
    assert len(err) == 1 and "the pix2pix family cannot be batched: the U-Net's dropout" in err[0], err
    assert not (tmp_path / "r").exists()
