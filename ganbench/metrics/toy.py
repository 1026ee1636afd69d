"""Mode-coverage metrics and pictures for 2-D Gaussian-mixture toys.

Following Metz et al. 2017 ("Unrolled Generative Adversarial Networks", sec. 3.1) and
Srivastava et al. 2017 ("VEEGAN", sec. 5.1): a generated point is *high quality* when it lies
within ``threshold`` standard deviations of its nearest mixture centre, and a mode is *covered*
when at least ``MIN_COUNT`` high-quality points are assigned to it. These are also the scores of
PacGAN's 2-D experiments (Lin et al. 2018, Table 1; ``synthetic_data_experiments/PacGAN/pacgan/
extensions.py``, ``MetricLogger.do``, lines 154-175 of github.com/fjxmlzn/PacGAN): its distance
``sqrt(sum(d² / σ²))`` with an isotropic σ is the Euclidean distance divided by σ, a mode counts
with one high-quality sample, and its reverse KL is ``reverse_kl`` below.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MIN_COUNT = 1
"""A mode counts as covered when at least this many high-quality samples land on it."""

KL_EPS = 1e-10
"""Added to every bin of the mode histogram before normalising, so empty modes give a finite KL."""


def mode_metrics(
    samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0, min_count: int = MIN_COUNT
) -> dict[str, float]:
    """Mode coverage of 2-D samples against a Gaussian mixture with K equal-weight modes.

    Returns
        ``modes_covered``: number of modes with >= ``min_count`` high-quality samples;
        ``high_quality_frac``: fraction of samples within ``threshold * std`` (Euclidean) of
        their nearest centre;
        ``kl_to_uniform``: KL(p || U_K) = sum_k p_k log(K p_k), where p is the histogram of
        high-quality samples over modes with ``KL_EPS`` added to every bin before normalising
        (0 when no sample is high quality is reported as log K, the value for a single mode);
        ``reverse_kl``: PacGAN's reverse KL, KL(p || U_K) = log K - H(p) with the exact histogram
        (empty modes add 0), NaN when no sample is high quality (p is undefined). It differs from
        ``kl_to_uniform`` only by the smoothing: each empty mode adds about ``KL_EPS / n · log(K KL_EPS / n)``
        there (n high-quality samples), below 1e-7 in all for K ≤ 25 whenever a sample is high quality.
    """
    s = samples.detach().double().cpu()
    c = torch.as_tensor(centers).double().cpu()
    k = c.shape[0]
    dist = torch.cdist(s, c)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= threshold * float(std)
    counts = torch.bincount(nearest[good], minlength=k).double()
    covered = int((counts >= min_count).sum())
    if counts.sum() == 0:
        kl = math.log(k)
    else:
        p = (counts + KL_EPS) / (counts + KL_EPS).sum()
        kl = float((p * torch.log(p * k)).sum())
    q = counts[counts > 0] / counts.sum()
    reverse_kl = float((q * torch.log(q * k)).sum()) if len(q) else math.nan
    return {
        "modes_covered": float(covered),
        "high_quality_frac": float(good.double().mean()) if s.shape[0] else 0.0,
        "kl_to_uniform": kl,
        "reverse_kl": reverse_kl,
    }


def toy_scatter(
    real: Tensor | None,
    fake: Tensor,
    path: str | Path | None = None,
    title: str = "",
    centers: Tensor | None = None,
):
    """Scatter of real (if given) vs generated 2-D points with Gaussian-KDE density contours of each.

    Saves a PNG when ``path`` is given and returns the path; otherwise returns the matplotlib
    figure (the caller closes it).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    r = np.zeros((0, 2)) if real is None else real.detach().double().cpu().numpy()
    f = fake.detach().double().cpu().numpy()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    both = np.concatenate([r, f])
    lo, hi = both.min(axis=0), both.max(axis=0)
    pad = 0.1 * (hi - lo + 1e-9)
    gx, gy = np.meshgrid(
        np.linspace(lo[0] - pad[0], hi[0] + pad[0], 100), np.linspace(lo[1] - pad[1], hi[1] + pad[1], 100)
    )
    grid = np.vstack([gx.ravel(), gy.ravel()])
    ax.scatter(r[:, 0], r[:, 1], s=3, alpha=0.3, c="tab:blue", label="real")
    ax.scatter(f[:, 0], f[:, 1], s=3, alpha=0.3, c="tab:orange", label="generated")
    for pts, cmap in ((r, "Blues"), (f, "Oranges")):
        if pts.shape[0] > 2 and np.linalg.matrix_rank(np.cov(pts.T)) == 2:
            z = gaussian_kde(pts.T)(grid).reshape(gx.shape)
            ax.contour(gx, gy, z, levels=6, cmap=cmap, linewidths=0.8)
    if centers is not None:
        cc = torch.as_tensor(centers).cpu().numpy()
        ax.scatter(cc[:, 0], cc[:, 1], marker="x", c="k", s=30, label="modes")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_aspect("equal")
    fig.tight_layout()
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
