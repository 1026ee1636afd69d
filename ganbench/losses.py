"""Adversarial objectives as pure functions of discriminator outputs.

Every objective is a pair ``d_<name>(real, fake, **kw)`` (the discriminator minimizes it) and
``g_<name>(fake, real=None, **kw)`` (the generator minimizes it). Inputs are the raw outputs of the
discriminator, one per sample, of shape ``(N,)`` or ``(N, 1)``: logits for the classifier losses,
critic values for the Wasserstein loss, ``V(x)`` for f-GAN. Both return scalars. The table
:data:`LOSSES` maps every :data:`LossName` to its :class:`Objective`.

Energy-based objectives (EBGAN, MAGAN, BEGAN, Loss-Sensitive GAN) take per-sample energies
(reconstruction errors or learned losses) instead of logits, and MMD-GAN takes feature matrices;
they have their own signatures because they need margins, the BEGAN equilibrium variable ``k`` or
both feature sets, and are listed outside :data:`LOSSES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from ganbench import GanbenchError

LossName = Literal["ns", "minimax", "hinge", "wasserstein", "ls", "softmax",
                   "fgan_kl", "fgan_reverse_kl", "fgan_js", "fgan_pearson", "fgan_hellinger"]
FDivergenceName = Literal["kl", "reverse_kl", "js", "pearson", "hellinger"]
Kernel = Literal["rq", "rbf"]

_LOG2 = math.log(2.0)


class Objective(NamedTuple):
    """The two players of one adversarial objective.

    ``g_needs_real`` tells the training loop that ``g`` uses D's outputs on real data (``real=``),
    as the Softmax GAN's generator loss does; the others ignore ``real``.
    """

    d: Callable[..., Tensor]
    g: Callable[..., Tensor]
    g_needs_real: bool = False


# ---------------------------------------------------------------------------------------------
# Classifier and critic losses
# ---------------------------------------------------------------------------------------------


def d_ns(real: Tensor, fake: Tensor, real_target: float | Tensor = 1.0) -> Tensor:
    """Discriminator loss of the original GAN (Goodfellow et al. 2014, eq. 1).

    ``BCE(real, real_target) + BCE(fake, 0)`` on logits, i.e.
    ``-E[t log σ(D(x)) + (1-t) log(1-σ(D(x)))] - E[log(1-σ(D(G(z))))]``. ``real_target = 0.9`` is
    one-sided label smoothing (Salimans et al. 2016, §3.4); the fake target always stays 0.
    """
    target = real_target.expand_as(real) if torch.is_tensor(real_target) else torch.full_like(real, real_target)
    return (F.binary_cross_entropy_with_logits(real, target)
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def g_ns(fake: Tensor, real: Tensor | None = None) -> Tensor:
    """Non-saturating generator loss (Goodfellow et al. 2014, §3): ``-E[log σ(D(G(z)))]``.

    Written as ``softplus(-l)``, which is exact and stable for any logit ``l``.
    """
    return F.softplus(-fake).mean()


def d_minimax(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """Discriminator loss of the minimax GAN: identical to :func:`d_ns`."""
    return d_ns(real, fake, real_target=real_target)


def g_minimax(fake: Tensor, real: Tensor | None = None) -> Tensor:
    """Saturating minimax generator loss (Goodfellow et al. 2014, eq. 1): ``E[log(1-σ(D(G(z))))]``.

    Written as ``-softplus(l)``. Its gradient ``-σ(l)`` vanishes when D confidently rejects the
    samples (``l → -∞``), which is why :func:`g_ns` is used in practice.
    """
    return -F.softplus(fake).mean()


def d_hinge(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge discriminator loss (Lim & Ye 2017; Miyato et al. 2018, §4):
    ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge(fake: Tensor, real: Tensor | None = None) -> Tensor:
    """Hinge generator loss: ``-E[D(G(z))]``."""
    return -fake.mean()


def d_wasserstein(real: Tensor, fake: Tensor) -> Tensor:
    """WGAN critic loss (Arjovsky et al. 2017, eq. 3, negated): ``E[D(G(z))] - E[D(x)]``."""
    return fake.mean() - real.mean()


def g_wasserstein(fake: Tensor, real: Tensor | None = None) -> Tensor:
    """WGAN generator loss: ``-E[D(G(z))]``."""
    return -fake.mean()


def d_ls(real: Tensor, fake: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Least-squares discriminator loss (Mao et al. 2017, eq. 2):
    ``½E[(D(x) - b)²] + ½E[(D(G(z)) - a)²]``; the default a=0, b=1 is the paper's eq. 9."""
    return 0.5 * (real - b).pow(2).mean() + 0.5 * (fake - a).pow(2).mean()


def g_ls(fake: Tensor, real: Tensor | None = None, c: float = 1.0) -> Tensor:
    """Least-squares generator loss (Mao et al. 2017, eq. 2): ``½E[(D(G(z)) - c)²]``."""
    return 0.5 * (fake - c).pow(2).mean()


def d_softmax(real: Tensor, fake: Tensor) -> Tensor:
    """Softmax GAN discriminator loss (Lin 2017, §2).

    D's output is a logit ``-μ(x)`` (μ the energy). With ``Z = Σ_{x∈B} e^{-μ(x)}`` over the whole batch
    ``B = B₊ ∪ B₋`` of real and generated samples, ``L_D = Σ_{x∈B₊} μ(x)/|B₊| + ln Z``: the
    cross-entropy between the softmax over ``B`` and the target that puts ``1/|B₊|`` on every real
    sample and 0 on every fake.
    """
    real, fake = real.reshape(-1), fake.reshape(-1)
    return -real.mean() + torch.logsumexp(torch.cat([real, fake]), dim=0)


def g_softmax(fake: Tensor, real: Tensor | None = None) -> Tensor:
    """Softmax GAN generator loss (Lin 2017, §2): cross-entropy against the uniform target ``1/|B|``
    over real and generated samples, ``L_G = Σ_{x∈B} μ(x)/|B| + ln Z``. Needs ``real``."""
    if real is None:
        raise ValueError("g_softmax needs the discriminator outputs on real data: pass real=")
    logits = torch.cat([real.reshape(-1), fake.reshape(-1)])
    return -logits.mean() + torch.logsumexp(logits, dim=0)


# ---------------------------------------------------------------------------------------------
# f-GAN
# ---------------------------------------------------------------------------------------------


class FDivergence(NamedTuple):
    """One row of Nowozin et al. 2016, Table 2 (output activation and conjugate).

    ``activation`` is ``g_f`` mapping the raw output ``v`` into the domain of the conjugate,
    ``conjugate`` is the Fenchel conjugate ``f*(t)``, and ``conjugate_of_activation`` is the closed
    form of ``f*(g_f(v))`` used by the losses because it is exact where the composition overflows.
    """

    activation: Callable[[Tensor], Tensor]
    conjugate: Callable[[Tensor], Tensor]
    conjugate_of_activation: Callable[[Tensor], Tensor]


FDIVERGENCES: dict[str, FDivergence] = {
    # KL: g_f(v) = v, f*(t) = exp(t - 1)
    "kl": FDivergence(lambda v: v, lambda t: torch.exp(t - 1.0), lambda v: torch.exp(v - 1.0)),
    # reverse KL: g_f(v) = -exp(-v), f*(t) = -1 - log(-t); f*(g_f(v)) = v - 1
    "reverse_kl": FDivergence(lambda v: -torch.exp(-v), lambda t: -1.0 - torch.log(-t), lambda v: v - 1.0),
    # Jensen-Shannon: g_f(v) = log 2 - log(1 + e^{-v}), f*(t) = -log(2 - e^t);
    # f*(g_f(v)) = softplus(v) - log 2
    "js": FDivergence(lambda v: _LOG2 - F.softplus(-v), lambda t: -torch.log(2.0 - torch.exp(t)),
                      lambda v: F.softplus(v) - _LOG2),
    # Pearson χ²: g_f(v) = v, f*(t) = t²/4 + t
    "pearson": FDivergence(lambda v: v, lambda t: 0.25 * t * t + t, lambda v: 0.25 * v * v + v),
    # squared Hellinger: g_f(v) = 1 - e^{-v}, f*(t) = t / (1 - t); f*(g_f(v)) = e^v - 1
    "hellinger": FDivergence(lambda v: 1.0 - torch.exp(-v), lambda t: t / (1.0 - t),
                             lambda v: torch.expm1(v)),
}


def _fdivergence(divergence: str) -> FDivergence:
    try:
        return FDIVERGENCES[divergence]
    except KeyError:
        raise GanbenchError(
            f"divergence={divergence!r} is not an f-divergence; choose one of: {', '.join(FDIVERGENCES)}"
        ) from None


def d_fgan(real: Tensor, fake: Tensor, divergence: str = "js") -> Tensor:
    """f-GAN discriminator (variational function) loss (Nowozin et al. 2016, eq. 6, negated):
    ``-(E_P[g_f(V(x))] - E_Q[f*(g_f(V(G(z))))])``."""
    fd = _fdivergence(divergence)
    return -(fd.activation(real).mean() - fd.conjugate_of_activation(fake).mean())


def g_fgan(fake: Tensor, real: Tensor | None = None, divergence: str = "js") -> Tensor:
    """f-GAN generator loss, the non-saturating alternative of Nowozin et al. 2016, §3.2:
    G maximizes ``E_Q[g_f(V(G(z)))]`` instead of minimizing ``-E_Q[f*(g_f(V(G(z))))]``, which gives
    stronger gradients early in training (as for the non-saturating GAN)."""
    return -_fdivergence(divergence).activation(fake).mean()


def _fgan_objective(divergence: str) -> Objective:
    def d(real: Tensor, fake: Tensor) -> Tensor:
        return d_fgan(real, fake, divergence=divergence)

    def g(fake: Tensor, real: Tensor | None = None) -> Tensor:
        return g_fgan(fake, real, divergence=divergence)

    d.__name__, g.__name__ = f"d_fgan_{divergence}", f"g_fgan_{divergence}"
    d.__doc__ = f"{d_fgan.__doc__}\n\n    With the {divergence!r} divergence."
    g.__doc__ = f"{g_fgan.__doc__}\n\n    With the {divergence!r} divergence."
    return Objective(d, g)


LOSSES: dict[str, Objective] = {
    "ns": Objective(d_ns, g_ns),
    "minimax": Objective(d_minimax, g_minimax),
    "hinge": Objective(d_hinge, g_hinge),
    "wasserstein": Objective(d_wasserstein, g_wasserstein),
    "ls": Objective(d_ls, g_ls),
    "softmax": Objective(d_softmax, g_softmax, g_needs_real=True),
    **{f"fgan_{name}": _fgan_objective(name) for name in get_args(FDivergenceName)},
}


def get_objective(name: str, key: str = "loss") -> Objective:
    """``LOSSES[name]``, raising :class:`GanbenchError` naming ``key`` and the valid names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise GanbenchError(f"{key}={name!r} is not a loss; choose one of: {', '.join(LOSSES)}") from None


# ---------------------------------------------------------------------------------------------
# Energy-based objectives (inputs are per-sample energies)
# ---------------------------------------------------------------------------------------------


def d_ebgan(real_energy: Tensor, fake_energy: Tensor, margin: float) -> Tensor:
    """EBGAN discriminator loss (Zhao et al. 2017, eq. 1): ``E[D(x)] + E[[m - D(G(z))]⁺]``.

    Also the MAGAN discriminator loss (Wang et al. 2017), whose margin follows
    :func:`magan_margin_update`.
    """
    return real_energy.mean() + F.relu(margin - fake_energy).mean()


def g_ebgan(fake_energy: Tensor, real_energy: Tensor | None = None) -> Tensor:
    """EBGAN generator loss (Zhao et al. 2017, eq. 2): ``E[D(G(z))]``."""
    return fake_energy.mean()


def pullaway_term(embeddings: Tensor) -> Tensor:
    """Repelling regularizer of EBGAN-PT (Zhao et al. 2017, eq. 6).

    ``f_PT(S) = 1/(N(N-1)) Σ_i Σ_{j≠i} (S_iᵀS_j / (‖S_i‖‖S_j‖))²`` over the encoder embeddings ``S``
    of a batch (each sample flattened): 0 for mutually orthogonal embeddings, 1 for parallel ones.
    """
    n = embeddings.shape[0]
    if n < 2:
        raise ValueError("pullaway_term needs at least two embeddings")
    s = F.normalize(embeddings.reshape(n, -1), dim=1)
    cos2 = (s @ s.T).pow(2)
    return (cos2.sum() - cos2.diagonal().sum()) / (n * (n - 1))


def d_began(real_energy: Tensor, fake_energy: Tensor, k: float) -> Tensor:
    """BEGAN discriminator loss (Berthelot et al. 2017, eq. 4): ``L(x) - k_t·L(G(z))``."""
    return real_energy.mean() - k * fake_energy.mean()


def g_began(fake_energy: Tensor, real_energy: Tensor | None = None) -> Tensor:
    """BEGAN generator loss (Berthelot et al. 2017, eq. 4): ``L(G(z))``."""
    return fake_energy.mean()


def began_k_update(k: float, real_energy: Tensor, fake_energy: Tensor, gamma: float,
                   lambda_k: float) -> float:
    """Proportional control of BEGAN's equilibrium (Berthelot et al. 2017, eq. 4):
    ``k_{t+1} = clip(k_t + λ_k(γL(x) - L(G(z))), 0, 1)``."""
    balance = gamma * float(real_energy.detach().mean()) - float(fake_energy.detach().mean())
    return min(1.0, max(0.0, k + lambda_k * balance))


def began_convergence(real_energy: Tensor, fake_energy: Tensor, gamma: float) -> Tensor:
    """BEGAN's global convergence measure (Berthelot et al. 2017, §3.4.1):
    ``M_global = L(x) + |γL(x) - L(G(z))|``."""
    real_mean = real_energy.detach().mean()
    return real_mean + (gamma * real_mean - fake_energy.detach().mean()).abs()


def magan_margin_update(margin: float, real_energy_mean: float, fake_energy_mean: float) -> float:
    """MAGAN's margin adaptation (Wang et al. 2017, Algorithm 1), applied at the end of each epoch.

    With ``S_real``, ``S_fake`` the epoch's mean energies of real and generated samples, the margin
    becomes ``S_real`` when ``S_real < m`` and ``S_real < S_fake``; otherwise it is unchanged. The
    margin therefore never increases.
    """
    real_mean, fake_mean = float(real_energy_mean), float(fake_energy_mean)
    if real_mean < margin and real_mean < fake_mean:
        return real_mean
    return float(margin)


def d_loss_sensitive(real_loss: Tensor, fake_loss: Tensor, delta: Tensor | float, lam: float) -> Tensor:
    """Loss-Sensitive GAN objective of the loss function, ``S(θ, φ*)`` of Qi 2017:
    ``E[L(x)] + λ·E[(Δ(x, G(z)) + L(x) - L(G(z)))⁺]`` with the margin ``Δ`` of :func:`ls_margin`."""
    return real_loss.mean() + lam * F.relu(delta + real_loss - fake_loss).mean()


def g_loss_sensitive(fake_loss: Tensor, real_loss: Tensor | None = None) -> Tensor:
    """Loss-Sensitive GAN generator objective, ``T(θ*, φ)`` of Qi 2017: ``E[L(G(z))]``."""
    return fake_loss.mean()


def ls_margin(real: Tensor, fake: Tensor) -> Tensor:
    """LS-GAN margin ``Δ(x, G(z))`` (Qi 2017: an ℓ1 distance in pixel space).

    Taken as the per-sample *mean* absolute difference, shape ``(N,)``, so its scale does not
    depend on the image size.
    """
    return (real - fake).abs().reshape(real.shape[0], -1).mean(dim=1)


# ---------------------------------------------------------------------------------------------
# MMD
# ---------------------------------------------------------------------------------------------

RQ_ALPHAS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)
RBF_SIGMAS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    # ||x||² + ||y||² - 2xᵀy: differentiable everywhere, unlike ‖x - y‖ at x = y
    d = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def mixture_kernel(x: Tensor, y: Tensor, kernel: str = "rq", alphas: Sequence[float] = RQ_ALPHAS,
                   sigmas: Sequence[float] = RBF_SIGMAS) -> Tensor:
    """Gram matrix ``K[i, j] = k(x_i, y_j)`` of a kernel mixture, on rows of ``x`` (m, d) and ``y`` (n, d).

    * ``"rq"``: mixture of rational-quadratic kernels ``Σ_α (1 + ‖x-y‖²/(2α))^{-α}``
      (Bińkowski et al. 2018, §5, α ∈ {0.2, 0.5, 1, 2, 5});
    * ``"rbf"``: mixture of Gaussian kernels ``Σ_σ exp(-‖x-y‖²/(2σ²))`` (Li et al. 2017, §5).
    """
    d2 = _sq_dists(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1))
    if kernel == "rq":
        return sum((1.0 + d2 / (2.0 * a)).pow(-a) for a in alphas)
    if kernel == "rbf":
        return sum(torch.exp(-d2 / (2.0 * s * s)) for s in sigmas)
    raise GanbenchError(
        f"kernel={kernel!r} is not an MMD kernel; choose one of: {', '.join(get_args(Kernel))}")


def mmd2_unbiased(x: Tensor, y: Tensor, kernel: str = "rq", alphas: Sequence[float] = RQ_ALPHAS,
                  sigmas: Sequence[float] = RBF_SIGMAS) -> Tensor:
    """Unbiased estimator of the squared MMD (Gretton et al. 2012, Lemma 6) between feature sets.

    ``1/(m(m-1)) Σ_{i≠j} k(x_i,x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i,y_j) - 2/(mn) Σ_{i,j} k(x_i,y_j)``
    with the kernel mixture of :func:`mixture_kernel`. It can be negative when the sets match.
    """
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("mmd2_unbiased needs at least two samples in each set")
    kxx = mixture_kernel(x, x, kernel, alphas, sigmas)
    kyy = mixture_kernel(y, y, kernel, alphas, sigmas)
    kxy = mixture_kernel(x, y, kernel, alphas, sigmas)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2.0 * kxy.mean())


def d_mmd(real_feat: Tensor, fake_feat: Tensor, **kernel_kw) -> Tensor:
    """MMD-GAN critic loss (Li et al. 2017; Bińkowski et al. 2018): the critic's features
    maximize the MMD, so it minimizes ``-MMD²_u(real, fake)``."""
    return -mmd2_unbiased(real_feat, fake_feat, **kernel_kw)


def g_mmd(fake_feat: Tensor, real_feat: Tensor, **kernel_kw) -> Tensor:
    """MMD-GAN generator loss: ``MMD²_u(real, fake)`` on the critic's features."""
    return mmd2_unbiased(real_feat, fake_feat, **kernel_kw)
