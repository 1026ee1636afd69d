"""DDP trains the same model as one process with the whole batch: the check behind tests/test_ddp.py.

Data-parallel SGD (Li et al., "PyTorch Distributed", VLDB 2020, §2) averages the gradients of the N
per-device losses. For a loss that is a mean over samples, L(B_1 ∪ … ∪ B_N) = (1/N) Σ_r L(B_r) when
the B_r have equal size, so one DDP step on N devices with per-device batch B must give exactly the
parameters of one single-process step on the union batch of N·B samples — provided every sample's
term depends on that sample alone (norms without batch statistics, no minibatch features) and both
runs see the same real samples and latents.

This script runs a few G iterations of each case on a fixed data tensor, with latents (and the
interpolation weights of WGAN-GP) read from fixed tensors so a rank takes rows ``rank::world`` of
what one process takes whole, and saves each
rank's ``state_dict`` (parameters and buffers: spectral-norm u/v, EMA), the initial one, plus the first latents the
rank's own random stream draws after ``on_fit_start`` (the per-rank seeding). Plain SGD is used so
that a gradient scaled wrongly (summed instead of averaged) changes the result; Adam's first
update, lr·g/|g|, would hide it.

    python scripts/ddp_equivalence.py --devices 1 --batch-size 8 --out ref/
    python scripts/ddp_equivalence.py --devices 2 --batch-size 4 --out ddp/   # Lightning DDP, gloo

With ``--devices > 1`` the strategy is the one in configs/trainer/ddp.yaml; Lightning's launcher
re-runs this script once per extra rank. Each rank writes ``<out>/<case>-rank<r>.pt``; a case whose
family is not in :data:`ganbench.models.FAMILIES` writes ``<out>/<case>.missing`` instead.
``--cases families`` instead trains every registered family with its own defaults (BatchNorm,
paper optimizers, n_critic): no equivalence is expected there, only that DDP runs and leaves the
ranks' parameters identical; a family whose G does not map latents to samples (image-to-image) is
skipped with ``<out>/<case>.skipped``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganbench.data.loader import TensorLoader  # noqa: E402
from ganbench.models import FAMILIES, GANModule  # noqa: E402

SHAPE = (1, 16, 16)
LATENT_DIM = 8
N_CRITIC = 2
SEED = 0


@dataclass(frozen=True)
class Case:
    """A family (the first of ``families`` that exists, else ``fallback``) with its arguments.

    Norms are chosen without batch statistics: BatchNorm would make the per-device statistics
    differ from the union batch's (SyncBatchNorm restores them but runs on GPUs only)."""

    families: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None
    fallback_kwargs: dict[str, Any] = field(default_factory=dict)
    #: SGD learning rate of both players; None: the family's own optimizers and n_critic
    lr: float | None = 0.05
    #: sample shape (the DCGAN networks need 32x32: they stop at 4x4 after a reflect-padded stage)
    shape: tuple[int, ...] = SHAPE


#: case name → what it trains
CASES: dict[str, Case] = {
    # spectral norm in D (power iteration buffers), hinge loss, EMA of G
    "sngan": Case(("sngan",), {"g_norm": "layer", "d_norm": "spectral", "loss": "hinge", "ema_decay": 0.9}),
    # WGAN-GP: the penalty differentiates D's gradient (autograd.grad(create_graph=True)) under DDP
    "wgan_gp": Case(("wgan_gp", "wgangp"), {"g_norm": "layer", "d_norm": "layer"},
                    fallback="sngan",
                    fallback_kwargs={"g_norm": "layer", "d_norm": "layer", "loss": "wasserstein", "penalty": "gp"},
                    lr=1e-3),  # the critic's output is unbounded: a larger SGD step blows it up
    # an autoencoder discriminator (energy = reconstruction error). EBGAN without its pulling-away term:
    # that term compares every pair of a batch's codes, so under DDP it covers the pairs within a rank
    # only (a batch statistic, like BatchNorm)
    "ebgan": Case(("ebgan",), {"g_norm": "layer", "d_norm": "none", "pt_weight": 0.0}),
    # BEGAN: its control variable k is updated from energies averaged over the ranks
    "began": Case(("began",), {"g_norm": "layer", "d_norm": "none"}),
}


def resolve(case: Case) -> tuple[type[GANModule], dict[str, Any]] | None:
    """The family class and arguments of ``case``; None when neither it nor its fallback exists."""
    for name in case.families:
        if name in FAMILIES:
            return FAMILIES[name], dict(case.kwargs)
    if case.fallback is not None and case.fallback in FAMILIES:
        return FAMILIES[case.fallback], dict(case.fallback_kwargs)
    return None


def fixed_latents(model: GANModule) -> None:
    """Replace ``model.sample_latent``: call k draws ``n·world`` rows from a generator seeded with k
    and returns rows ``rank::world`` of them, so the ranks together see what one process sees."""
    calls = itertools.count()

    def sample_latent(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        world, rank = model.trainer.world_size, model.global_rank
        g = torch.Generator().manual_seed(10_000 + next(calls))
        z = torch.randn(n * world, model.latent_dim, generator=g)
        return z[rank::world].to(model.fixed_z.device)

    model.sample_latent = sample_latent  # type: ignore[method-assign]


#: penalties evaluated at x̂ = α·real + (1-α)·fake with α ~ U[0, 1) drawn inside the penalty
INTERPOLATING = frozenset({"gp", "lp"})


def fixed_interpolation(model: GANModule) -> None:
    """For the interpolating penalties (WGAN-GP, WGAN-LP), draw α like the latents (call k: ``n·world``
    values, rows ``rank::world``), form x̂ here and hand the penalty x̂ as both endpoints, so its own
    random α no longer matters: α·x̂ + (1-α)·x̂ = x̂."""
    if model.hparams.penalty not in INTERPOLATING:
        return
    calls = itertools.count()
    penalty = model.penalty_fn

    def penalty_fn(D: Any, real: torch.Tensor, fake: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        world, rank = model.trainer.world_size, model.global_rank
        g = torch.Generator().manual_seed(20_000 + next(calls))
        alpha = torch.rand(len(real) * world, *([1] * (real.dim() - 1)), generator=g)[rank::world]
        alpha = alpha.to(real.device)
        x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).detach()
        return penalty(D, x_hat, x_hat, **kwargs)

    model.penalty_fn = penalty_fn


class ProbeRankStream(L.Callback):
    """Records 4 latents drawn by the family's own ``sample_latent`` once training starts: they show
    which random stream this rank got from :meth:`GANModule.seed_rank`."""

    def __init__(self) -> None:
        self.latents: torch.Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: GANModule) -> None:
        self.latents = type(pl_module).sample_latent(pl_module, 4).cpu()


def ddp_strategy() -> L.pytorch.strategies.Strategy:
    """The strategy of configs/trainer/ddp.yaml, built from its class_path and init_args."""
    spec = yaml.safe_load((ROOT / "configs" / "trainer" / "ddp.yaml").read_text())["trainer"]["strategy"]
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def run_case(name: str, case: Case, devices: int, batch_size: int, steps: int, out: Path) -> None:
    resolved = resolve(case)
    if resolved is None:
        (out / f"{name}.missing").write_text(f"none of {', '.join(case.families)} in ganbench.models\n")
        return
    cls, kwargs = resolved
    L.seed_everything(SEED, verbose=False)
    if case.lr is not None:
        sgd = functools.partial(torch.optim.SGD, lr=case.lr)
        kwargs = {"n_critic": N_CRITIC, "g_optimizer": sgd, "d_optimizer": sgd, **kwargs}
    model = cls(data_shape=case.shape, latent_dim=LATENT_DIM, width=4, num_classes=10, n_samples=4, **kwargs)
    n_critic = model.n_critic
    if case.lr is None:  # families mode: only families that map latents to samples fit this data
        try:
            model.sample(2)
        except Exception as err:  # image-to-image families need paired/unpaired image data
            (out / f"{name}.skipped").write_text(f"{type(err).__name__}: {err}\n")
            return
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    fixed_latents(model)
    fixed_interpolation(model)
    n = batch_size * devices * n_critic * steps  # the same rows for every world size
    g = torch.Generator().manual_seed(7)
    x = torch.rand(n, *case.shape, generator=g) * 2 - 1
    y = torch.arange(n) % 10  # class labels for the conditional families
    loader = TensorLoader(x, y, batch_size=batch_size * n_critic, shuffle=False, drop_last=True)
    probe = ProbeRankStream()
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=ddp_strategy() if devices > 1 else "auto",
                        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[probe])
    trainer.fit(model, train_dataloaders=loader)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"family": cls.family, "world": trainer.world_size, "rank": trainer.global_rank,
                "g_steps": trainer.global_step, "d_steps": model._d_steps, "n_critic": n_critic,
                "state": state, "initial": initial, "probe": probe.latents, "began_k": getattr(model, "k", None),
                "parameters": [k for k, _ in model.named_parameters()]},
               out / f"{name}-rank{trainer.global_rank}.pt")
    print(f"ddp_equivalence: {name} ({cls.__name__}) rank {trainer.global_rank}/{trainer.world_size} "
          f"g_steps={trainer.global_step}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, required=True, help="CPU processes (>1: DDP over gloo)")
    parser.add_argument("--batch-size", type=int, required=True, help="real samples per D step per process")
    parser.add_argument("--steps", type=int, default=2, help=f"G iterations ({N_CRITIC} D steps + 1 G step each)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}, or 'families': every registered "
                             "family with its own defaults (norms, optimizers, n_critic)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # two ranks on two shared cores
    cases = ({f"family-{f}": Case((f,), lr=None, shape=(1, 32, 32)) for f in FAMILIES} if args.cases == "families"
             else {name: CASES[name] for name in args.cases.split(",")})
    for name, case in cases.items():
        run_case(name, case, args.devices, args.batch_size, args.steps, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
