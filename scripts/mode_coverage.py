"""Mode coverage of every family on the 8-Gaussian ring (Metz et al. 2017, §3.1), written to docs/mode_coverage.md.

Every family in :data:`ganbench.models.FAMILIES` that builds on 2-D data is trained on ``ring8`` with MLP
networks of the same size for the same number of generator iterations, with its own paper defaults
(loss, penalty, n_critic, norms, optimizer). Then ``--samples`` points from G are scored with
:func:`ganbench.metrics.toy.mode_metrics` (a point is high quality within 3σ of its nearest mode; a mode
is covered by at least one high-quality point). Training is an ordinary Lightning ``fit`` of the module.

    python scripts/mode_coverage.py --steps 1500 --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from ganbench.data import GANDataModule
from ganbench.metrics.toy import mode_metrics
from ganbench.models import FAMILIES

#: what follows this line in the output file is written by hand and kept when the table is regenerated
NOTES = "<!-- reading: kept by scripts/mode_coverage.py -->"
MACHINE = f"{os.cpu_count()}-core CPU ({platform.machine()})"


def train_and_score(family: str, args: argparse.Namespace, dm: GANDataModule) -> dict[str, float | str]:
    """Fit one family on ring8 for ``args.steps`` G iterations; its mode metrics, or why it was skipped."""
    L.seed_everything(args.seed, verbose=False)
    try:
        model = FAMILIES[family](data_shape=dm.shape, num_classes=dm.num_classes, arch="mlp", width=args.width)
    except Exception as err:  # a family that needs images (or labels of another kind) does not build on 2-D data
        return {"skipped": f"{type(err).__name__}: {err}".splitlines()[0]}
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    wall = time.perf_counter() - t0
    torch.manual_seed(args.seed)
    samples = model.sample(args.samples)
    result: dict[str, float | str] = dict(mode_metrics(samples, dm.mixture.centers, dm.mixture.std))
    status = "completed" if model.status == "running" else model.status
    return result | {"status": status, "n_critic": model.n_critic, "wall_s": wall}


def render(rows: dict[str, dict], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Mode coverage on ring8",
        "",
        "Eight Gaussians (σ = 0.02) on a circle of radius 2 (Metz et al. 2017, §3.1). Every family that builds on",
        "2-D data is trained with its own paper defaults (loss, penalty, n_critic, norms, optimizer) and the same",
        f"MLP networks (3 hidden layers of {args.width} units, `arch: mlp`) for the same {args.steps} generator",
        f"iterations with D batches of {args.batch_size}; then {args.samples} samples of G are scored with",
        "`ganbench.metrics.toy.mode_metrics`: a sample is *high quality* within 3σ of its nearest mode, a mode",
        "is *covered* by at least one high-quality sample, and *KL to uniform* is KL(p ‖ U₈) of the",
        "high-quality samples' mode histogram (0 = all modes equally often; log 8 = 2.08 = one mode).",
        "",
        f"- command: `{command}`",
        f"- seed: {args.seed} · date: {time.strftime('%Y-%m-%d')} · machine: {MACHINE}, {args.jobs} families at a "
        f"time, {args.threads} torch thread(s) each (wall times are indicative)",
        f"- torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}",
        "",
        "A single seed and a short budget: a family's row says what this budget gives, not what the family can",
        "reach; families with n_critic = 5 make five D updates per G iteration, and the slow paper learning",
        "rates (WGAN's RMSProp 5e-5, Unrolled GAN's Adam 1e-4) move little in a short run.",
        "",
        "| family | n_critic | modes covered (of 8) | high-quality % | KL to uniform | status | wall s |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    skipped = []
    for family, r in rows.items():
        if "skipped" in r:
            skipped.append(f"- `{family}`: {r['skipped']}")
            continue
        lines.append(f"| {family} | {r['n_critic']} | {int(r['modes_covered'])} | {100 * r['high_quality_frac']:.1f} | "
                     f"{r['kl_to_uniform']:.3f} | {r['status']} | {r['wall_s']:.0f} |")
    if skipped:
        lines += ["", "Families that do not build on 2-D data (not in the table):", "", *skipped]
    return "\n".join(lines) + "\n"


def _one(job: tuple[str, argparse.Namespace]) -> tuple[str, dict]:
    """One family in this process (a pool worker with ``--jobs``): same data, seed and threads as alone."""
    family, args = job
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)  # small MLPs: one thread avoids spin-waiting on a shared CPU
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    dm = GANDataModule("ring8", batch_size=args.batch_size, n_toy_samples=50_000, seed=args.seed)
    return family, train_and_score(family, args, dm)


def _report(family: str, row: dict) -> None:
    print(family, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="generator iterations per family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=128, help="hidden units of the MLPs")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per D update")
    parser.add_argument("--samples", type=int, default=2500, help="generated samples that are scored")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--jobs", type=int, default=1, help="families trained at the same time (processes)")
    parser.add_argument("--out", type=Path, default=Path("docs/mode_coverage.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    rows = {}
    jobs = [(f, args) for f in args.families]
    with mp.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
        for family, row in pool.imap(_one, jobs) if pool else map(_one, jobs):
            rows[family] = row
            _report(family, row)
    command = "python scripts/mode_coverage.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(rows, args, command.strip())
    if args.out.exists() and NOTES in args.out.read_text():  # the hand-written reading stays
        text += "\n" + NOTES + args.out.read_text().split(NOTES, 1)[1]
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
