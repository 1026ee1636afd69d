"""Sample grids: the picture a GAN researcher looks at first.

Every ``every_n_steps`` generator iterations and at the end of training, G (its EMA copy when
present) is run on the module's fixed latent batch. Images are saved as
``<run>/samples/step_XXXXXXX.png`` (one column per class for conditional models); 2-D toy samples as a
scatter of real vs generated points. Each picture also goes to every logger that can take images
(W&B) through :func:`ganbench.callbacks.log.log_evaluation`, at the G iteration it shows.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from ganbench.callbacks.log import log_evaluation


class SampleGrid(L.Callback):
    def __init__(self, every_n_steps: int = 500, dirname: str = "samples"):
        self.every_n_steps = every_n_steps
        self.dirname = dirname
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            if hasattr(pl_module, "check_divergence"):  # every rank: the divergence flag is read at each grid
                pl_module.check_divergence()
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self.save(trainer, pl_module)

    @rank_zero_only
    def save(self, trainer: L.Trainer, pl_module) -> Path:
        step = trainer.global_step
        self._last_step = step
        out = Path(trainer.default_root_dir) / self.dirname / f"step_{step:07d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fake, ncol = pl_module.grid_images()
        fake = fake.float().cpu()
        replicas = getattr(pl_module, "population", 1)
        if fake.dim() == 2:
            real = None
            dm = trainer.datamodule
            if dm is not None and hasattr(dm, "real_samples"):
                real = dm.real_samples(2000, seed=0)
            fake_many = pl_module.sample(2000, z=torch.randn(2000, pl_module.latent_dim,
                                                             generator=torch.Generator().manual_seed(0)))
            panels = fake_many.float().cpu().reshape(replicas, -1, fake_many.shape[-1])
            titles = [f"step {step}" + (f" r{k}" if replicas > 1 else "") for k in range(replicas)]
            save_scatter(out, list(panels.unbind(0)), real, title=titles)
        elif replicas > 1:  # one row per replica: the first samples of each on the same latents
            per = fake.reshape(replicas, -1, *fake.shape[1:])[:, :16]
            save_grid(out, per.reshape(-1, *fake.shape[1:]), nrow=per.shape[1])
        else:
            save_grid(out, fake, nrow=ncol)
        log_evaluation(trainer, {}, images={"samples": out})
        return out


def save_grid(path: Path | str, images: torch.Tensor, nrow: int = 8) -> None:
    """Save images in [-1, 1] as one PNG grid."""
    from torchvision.utils import save_image

    save_image(images, str(path), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2, pad_value=1.0)


def save_scatter(path: Path | str, fake: torch.Tensor | list[torch.Tensor], real: torch.Tensor | None = None,
                 title: str | list[str] = "") -> None:
    """Scatter plot of generated (and real) 2-D points (1-D points on the line y = 0); a list of generated
    sets (a population's replicas) gives one panel each, on a grid."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fakes = fake if isinstance(fake, list) else [fake]
    titles = title if isinstance(title, list) else [title]
    cols = math.ceil(math.sqrt(len(fakes)))
    rows = math.ceil(len(fakes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), dpi=100, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(fakes):
            ax.axis("off")
            continue
        if real is not None:
            ax.scatter(*_plane(real), s=2, c="tab:blue", alpha=0.4, label="real")
        ax.scatter(*_plane(fakes[i]), s=2, c="tab:red", alpha=0.4, label="generated")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4, fontsize=7)
        ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plane(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The x and y coordinates of 2-D points; 1-D points lie on y = 0."""
    return points[:, 0], (points[:, 1] if points.shape[1] > 1 else torch.zeros(len(points)))
