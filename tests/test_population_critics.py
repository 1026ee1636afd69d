"""Populations of the families with their own D and G losses — the Loss-Sensitive GAN (a learned loss
L_θ, its margin and Lipschitz penalty) and MMD-GAN (a kernel two-sample statistic that couples the
samples of a batch, and a penalty on its witness function): replica k of a population is the fit
with seed s + k."""

import json

import pytest

from tests.test_population import IMAGES, assert_replica_equals, fit

LRS = [2e-4, 4e-4, 1e-4]
WEIGHTS = [10.0, 2.0, 0.5]
#: the kernel sees only differences φ(x) − φ(y), so a translation of φ leaves every loss unchanged: the
#: feature head's bias (and any bias whose unit stays on one side of its LeakyReLU over the batch) has
#: zero gradient in exact arithmetic, and Adam's default eps (1e-8) turns the rounding noise of that
#: zero into full steps that differ between any two summation orders; eps 1e-3 keeps them near 1e-6
#: after 8 G iterations (1e-4 and more with the default).
TRANSLATION_INVARIANT = ["--model.init_args.d_optimizer.init_args.eps", "1e-3"]


def replica_settings(k: int) -> list[str]:
    """The settings of replica k as an ordinary fit's arguments."""
    return ["--model.init_args.g_optimizer.init_args.lr", str(LRS[k]),
            "--model.init_args.d_optimizer.init_args.lr", str(LRS[k]),
            "--model.init_args.penalty_weight", str(WEIGHTS[k])]


#: top-k on the Loss-Sensitive GAN's score −L_θ and zCR's G term, on 64 ring points (4 batches an epoch)
TOP_K_ZCR = ["--model.init_args.top_k", "true", "--model.init_args.top_k_gamma", "0.5",
             "--model.init_args.top_k_min", "0.25", "--model.init_args.zcr_gen", "0.5", "--data.n_toy_samples", "64"]

OVERRIDES = ["--model.init_args.population_overrides",
             json.dumps([{"g_lr": x, "d_lr": x, "penalty_weight": w} for x, w in zip(LRS, WEIGHTS)])]


@pytest.mark.parametrize("config, extra, steps", [
    ("loss_sensitive", [], 20),  # MLPs on the ring, the lp penalty
    ("mmdgan", TRANSLATION_INVARIANT, 8),  # MLP critic, its 16-dimensional feature head, 5 critic steps per G step
    ("mmdgan", [*TRANSLATION_INVARIANT, *IMAGES, "--model.init_args.penalty", "lp"], 3),  # CNN critic: grouped convs
    ("loss_sensitive", [*IMAGES, "--model.init_args.penalty", "gp"], 6),
    ("loss_sensitive", TOP_K_ZCR, 20),  # k anneals from 16 to 4 over 5 epochs of 4 batches
], ids=["loss_sensitive-toy", "mmdgan-toy", "mmdgan-cnn-lp", "loss_sensitive-cnn-gp", "loss_sensitive-topk-zcr"])
def test_every_replica_equals_the_fit_with_its_seed(tmp_path, config, extra, steps):
    """Replicas 0, 1, 2 of seeds 5, 6, 7, each with its own learning rate and penalty weight, equal
    the population-1 fits with seeds 5, 6, 7 and those settings: the losses, the margin, the MMD²
    and the witness penalty are each replica's own, and every draw comes from its own stream."""
    pop = fit(tmp_path / "pop", config, 5, "--model.init_args.population", "3", *OVERRIDES, *extra, steps=steps)
    for k in range(3):
        one = fit(tmp_path / f"one{k}", config, 5 + k, *replica_settings(k), *extra, steps=steps)
        assert_replica_equals(pop, k, one, rtol=1e-4, atol=1e-5)
