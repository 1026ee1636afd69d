"""The Dirac-GAN (Mescheder et al. 2018): ``ganbench fit`` on ``data.dataset dirac`` with ``arch dirac``
follows the closed-form iteration of the paper's gradient vector fields, in both update orders."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ganbench import GanbenchError
from ganbench.data.datamodule import GANDataModule
from ganbench.losses import LOSSES
from ganbench.models import GAN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import reproduce_diracgan as dirac  # noqa: E402

from tests.tiny import tiny_fit  # noqa: E402

#: |fit − closed form| / max(1, |closed form|) over all 500 steps: float32 training against float64
#: arithmetic (the diverging GAN, |θ| ≈ 3 after 500 steps, reaches 5e-5; every other method stays below 3e-6)
TOLERANCE = 1e-4


@pytest.mark.parametrize("order", dirac.ORDERS)
@pytest.mark.parametrize("key", [m.key for m in dirac.METHODS])
def test_fit_follows_the_papers_vector_field(tmp_path, key, order):
    """Every method of the paper's figures, both update orders, 500 steps of h = 0.2 from (1, 1): the fit's
    (θ_t, ψ_t) is the closed-form iteration of the method's vector field, and not the other order's."""
    method = dirac.BY_KEY[key]
    r = dirac.compare(method, order, tmp_path)
    assert r["fit"].shape == (dirac.STEPS + 1, 2)
    assert r["max_rel_diff"] < TOLERANCE, r["max_rel_diff"]
    other = dirac.closed_form(method, next(o for o in dirac.ORDERS if o != order), noise=r["noise"])
    assert np.abs(other - r["closed_form"]).max() > 100 * TOLERANCE  # the order is visible in the trajectory


def test_verdicts_of_the_closed_form():
    """converges / circles / diverges of the paper's fields at the notebook's settings (ganbench's orders)."""
    got = {(m.key, o): dirac.verdict(np.hypot(*dirac.closed_form(m, o).T)) for m in dirac.METHODS
           for o in dirac.ORDERS if m.vector_field is not dirac.gan_noise}
    assert got[("gan", "simultaneous")] == "diverges"
    assert got[("gan", "alternating")] == "circles"
    assert {got[(k, o)] for k in ("wgan", "wgan_gp", "nsgan") for o in dirac.ORDERS} == {"circles"}  # not converging
    assert {got[(k, o)] for k in ("r1_0.3", "r1_1", "nsgan_r1_0.3") for o in dirac.ORDERS} == {"converges"}


#: the shipped config as it is (one G and one D parameter), quiet and without samples or W&B
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--run.wandb", "false",
         "--run.sample_every", "0"]


def small_fit(tmp_path: Path, order: str, steps: int, *args: str) -> tuple[float, float]:
    """(θ, ψ) after ``steps`` steps of configs/diracgan.yaml in ``order``."""
    fit = tiny_fit(tmp_path, "diracgan", "--model.init_args.update_order", order, *args, steps=steps, base=QUIET)
    state = fit.checkpoint()["state_dict"]
    return float(state["generator.theta"][0]), float(state["discriminator.head.psi"][0])


def loss_step(name: str, theta: float, psi: float, h: float, order: str, penalty_grad=lambda psi: 0.0):
    """One step of ``LOSSES[name]`` on the Dirac-GAN from the loss functions' own derivatives: D scores
    the real point 0 as 0 and G's θ as s = -ψθ, so ∂L/∂ψ = -θ ∂L/∂s_fake and ∂L/∂θ = -ψ ∂L/∂s_fake."""
    obj = LOSSES[name]

    def d_slope(theta, psi):
        s = torch.tensor([-psi * theta], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(obj.d(torch.zeros(1, dtype=torch.float64), s), s)
        return float(g) * -theta + penalty_grad(psi)

    def g_slope(theta, psi):
        s = torch.tensor([-psi * theta], dtype=torch.float64, requires_grad=True)
        real = torch.zeros(1, dtype=torch.float64) if obj.g_needs_real else None
        (g,) = torch.autograd.grad(obj.g(s, real), s)
        return float(g) * -psi

    new_psi = psi - h * d_slope(theta, psi)
    return theta - h * g_slope(theta, new_psi if order == "alternating" else psi), new_psi


@pytest.mark.parametrize("order", dirac.ORDERS)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_runs_on_the_dirac_gan(tmp_path, loss, order):
    """Every loss of the table, both orders: three steps equal three steps of the loss's own gradient."""
    got = small_fit(tmp_path, order, 3, "--model.class_path", "ganbench.models.DCGAN", "--model.init_args.loss",
                    loss, "--model.init_args.g_norm", "none", "--model.init_args.d_norm", "none")
    want = (1.0, 1.0)
    for _ in range(3):
        want = loss_step(loss, *want, 0.2, order)
    assert got != (1.0, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("penalty, weight, grad", [
    ("gp", 0.5, lambda psi: 0.5 * 2 * (abs(psi) - 1) * np.sign(psi)),  # ‖∇D‖ = |ψ| at every interpolate
    ("dragan", 0.5, lambda psi: 0.5 * 2 * (abs(psi) - 1) * np.sign(psi)),  # and at every perturbed real
    ("r1", 0.5, lambda psi: 0.5 * 2 * psi),
    ("r2", 0.5, lambda psi: 0.5 * 2 * psi),
])
def test_every_penalty_runs_on_the_dirac_gan(tmp_path, penalty, weight, grad):
    start = ["--model.init_args.dirac_start", "[0.5, 2.0]"]  # |ψ| ≠ 1: GP's and DRAGAN's gradient is not 0
    got = small_fit(tmp_path, "simultaneous", 3, "--model.init_args.penalty", penalty,
                    "--model.init_args.penalty_weight", str(weight), *start)
    want = (0.5, 2.0)
    for _ in range(3):
        want = loss_step("minimax", *want, 0.2, "simultaneous", grad)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_clipping_runs_on_the_dirac_gan(tmp_path):
    """WGAN's clipping: ψ never leaves [-c, c]; from (1, 0.25) with c = 0.3 it is clipped at the first step."""
    got = small_fit(tmp_path, "alternating", 1, "--model.class_path", "ganbench.models.WGAN",
                    "--model.init_args.clip", "0.3", "--model.init_args.n_critic", "1", "--model.init_args.g_norm",
                    "none", "--model.init_args.d_norm", "none", "--model.init_args.dirac_start", "[1.0, 0.25]")
    np.testing.assert_allclose(got, (1.0 - 0.2 * 0.3, 0.3), rtol=1e-6)  # ψ: 0.25 + 0.2 → 0.3; θ: −h ψ


def test_dirac_data_and_refusals():
    dm = GANDataModule(dataset="dirac", dirac_location=2.5, n_toy_samples=4)
    dm.setup()
    x, y = dm.training_data()
    assert dm.shape == (1,) and torch.equal(x, torch.full((4, 1), 2.5)) and torch.equal(y, torch.zeros(4).long())
    with pytest.raises(GanbenchError, match="data.dirac_location=1.0 places"):
        GANDataModule(dataset="ring8", dirac_location=1.0)
    with pytest.raises(GanbenchError, match="model.g_norm='batch'"):
        GAN(data_shape=(1,), arch="dirac", g_norm="batch")
    with pytest.raises(GanbenchError, match="model.dirac_start=.* is the start of model.arch dirac"):
        GAN(data_shape=(2,), arch="mlp", dirac_start=(1.0, 1.0))
    model = GAN(data_shape=(1,), arch="dirac", dirac_start=(0.5, -2.0), latent_dim=1)
    assert [p.item() for p in model.parameters()] == [0.5, -2.0]
    assert torch.equal(model.discriminator(torch.tensor([[3.0]])), torch.tensor([6.0]))  # -ψ·x
