"""Limited data: SNGAN on a 2 000-image subset of Fashion-MNIST, with and without DiffAugment.

With few training images D memorizes them and G's quality degrades as training goes on (Karras et
al. 2020 Fig. 1; Zhao et al. 2020 Fig. 1); augmenting every image D sees is the standard remedy.
This script trains both arms over the same seeds with ``ganbench fit`` (the same command a user
types, ``configs/sngan.yaml`` plus the overrides below), then reads every run's metrics.csv:
``val/fd_fmnist_<n>`` (the Fréchet distance in the Fashion-MNIST classifier's features, against the
whole training split) and ``diag/d_overfit_<n>`` (Karras et al.'s ``r_v`` on training vs held-out
reals, :class:`ganbench.callbacks.overfit.DiscriminatorOverfit`) over training. It writes
``docs/limited_data.md`` (command, machine, date, wall time, final values as mean ± standard error
over seeds, the curves) and ``docs/img/limited_data.png``.

Needs the Fashion-MNIST feature net (``ganbench train-features --data fashion_mnist``)::

    python scripts/limited_data.py --steps 2000 --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"SNGAN": [], "SNGAN + DiffAugment": ["--model.init_args.augment", "diffaugment"]}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fit_argv(args: argparse.Namespace, arm: str, seed: int, out: Path) -> list[str]:
    every = max(1, args.steps // args.evals)
    return [sys.executable, "-m", "ganbench.cli", "fit", "--config", str(ROOT / "configs/sngan.yaml"),
            "--data.dataset", "fashion_mnist", "--data.train_samples", str(args.train_samples),
            "--data.resolution", str(args.resolution), "--model.init_args.width", str(args.width),
            "--trainer.max_steps", str(args.steps), "--seed_everything", str(seed),
            "--trainer.accelerator", args.accelerator, "--trainer.default_root_dir", str(out),
            "--trainer.log_every_n_steps", str(every), "--run.metrics_every", str(every),
            "--run.diagnostics_every", str(every), "--run.image_features", "fmnist",
            "--run.image_metrics_n", str(args.samples), "--run.sample_every", str(args.steps),
            "--run.checkpoint_every", str(args.steps), "--run.wandb", "false", *ARMS[arm]]


def run_fit(argv: list[str], log: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with open(log, "w") as fh:
        return subprocess.call(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def curve(run: Path, prefix: str) -> dict[int, float]:
    """``step → value`` of the metrics.csv column starting with ``prefix`` (its count tag varies)."""
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    keys = [k for k in rows[0] if k.startswith(prefix) and "/r" not in k[len(prefix):] and "_std_" not in k]
    if not keys:
        raise SystemExit(f"{run}/metrics.csv has no {prefix}* column")
    return {int(r["step"]): float(r[keys[0]]) for r in rows if r.get(keys[0])}


def mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "—"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) / math.sqrt(len(values)):.2f}"


def main() -> None:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, seed) for seed in args.seeds for arm in ARMS]
    start = time.time()

    def one(job: tuple[str, int]) -> tuple[str, int, int, bool]:
        arm, seed = job
        run = out / f"{'diffaug' if 'Diff' in arm else 'plain'}_s{seed}"
        if (run / "summary.json").exists() and not args.rerun:
            return arm, seed, 0, False
        code = run_fit(fit_argv(args, arm, seed, run), out / f"{run.name}.log")
        print(f"ganbench: {arm} seed {seed}: exit {code} ({(time.time() - start) / 60:.1f} min)", flush=True)
        return arm, seed, code, True

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, jobs))
    if any(code for _, _, code, _ in results):
        raise SystemExit(f"some fits failed: see the logs in {out}")
    wall = (time.time() - start) / 60
    record = out / "wall_min.txt"  # a re-render without new fits keeps the wall time of the fits
    if any(ran for *_, ran in results) or not record.exists():
        record.write_text(f"{wall:.1f}")
    wall = float(record.read_text())
    fd = {(arm, s): curve(out / f"{'diffaug' if 'Diff' in arm else 'plain'}_s{s}", "val/fd_fmnist_")
          for arm in ARMS for s in args.seeds}
    ov = {(arm, s): curve(out / f"{'diffaug' if 'Diff' in arm else 'plain'}_s{s}", "diag/d_overfit_")
          for arm in ARMS for s in args.seeds}
    write_doc(fd, ov, wall)


def write_doc(fd: dict, ov: dict, wall: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(next(iter(fd.values())))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm, color in zip(ARMS, ("tab:red", "tab:blue")):
        for ax, data, label in ((axes[0], fd, "FD in Fashion-MNIST features (lower is better, log scale)"),
                                (axes[1], ov, "D overfitting r_v (0: none, 1: held-out reals score as fakes)")):
            for s in args.seeds:
                xs = sorted(data[(arm, s)])
                ax.plot(xs, [data[(arm, s)][x] for x in xs], color=color, alpha=0.3, lw=1)
            xs = sorted(set.intersection(*(set(data[(arm, s)]) for s in args.seeds)))
            ax.plot(xs, [statistics.fmean(data[(arm, s)][x] for s in args.seeds) for x in xs], color=color,
                    lw=2, label=f"{arm} (mean of {len(args.seeds)} seeds)")
            ax.set_xlabel("G iterations")
            ax.set_title(label, fontsize=9)
    axes[0].set_yscale("log")  # G's first samples sit an order of magnitude above the rest
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    img = ROOT / "docs/img/limited_data.png"
    img.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(img, dpi=120)
    cmd = "python scripts/limited_data.py " + " ".join(sys.argv[1:])
    lines = [
        "# Limited data: SNGAN with and without DiffAugment on 2 000 Fashion-MNIST images", "",
        f"- command: `{cmd}`",
        f"- machine: {cpu_name()}, {os.cpu_count()} CPU cores, "
        f"{args.jobs} fit(s) at a time, {args.threads} torch thread(s) each; date "
        f"{datetime.date.today().isoformat()}; wall time {wall:.0f} min",
        f"- every fit: `configs/sngan.yaml` (hinge loss, spectral-norm D, n_critic 5, Adam 2e-4 (0, 0.9)) on "
        f"`data.train_samples {args.train_samples}` (a fixed subset, the same for every fit) at "
        f"{args.resolution}×{args.resolution}, width {args.width}, {args.steps} G iterations; seeds "
        f"{', '.join(map(str, args.seeds))}; the DiffAugment arm adds `model.augment diffaugment` "
        "(color, translation, cutout on every image D sees)",
        f"- measured every {steps[1] - steps[0] if len(steps) > 1 else steps[0]} G iterations: "
        f"`val/fd_fmnist_*` on {args.samples} samples against the whole training split (the Fashion-MNIST "
        "classifier's features: not FID) and `diag/d_overfit_*` (r_v on 512 training vs 512 held-out "
        "reals, see docs/levers.md); r_v is first measured at the first diagnostics step", "",
        "| arm | FD at the end | best FD over training | r_v at the end |",
        "| --- | ---: | ---: | ---: |",
    ]
    last = steps[-1]
    for arm in ARMS:
        lines.append(f"| {arm} | {mean_se([fd[(arm, s)][last] for s in args.seeds])} | "
                     f"{mean_se([min(fd[(arm, s)].values()) for s in args.seeds])} | "
                     f"{mean_se([ov[(arm, s)][max(ov[(arm, s)])] for s in args.seeds])} |")
    lines += ["", "mean ± standard error over seeds.", "", "## Curves (mean over seeds: FD / r_v)", "",
              "| arm | " + " | ".join(str(s) for s in steps) + " |",
              "| --- | " + " | ".join("---:" for _ in steps) + " |"]
    for arm in ARMS:
        cells = []
        for x in steps:
            f = [fd[(arm, s)][x] for s in args.seeds if x in fd[(arm, s)]]
            o = [ov[(arm, s)][x] for s in args.seeds if x in ov[(arm, s)]]
            cells.append((f"{statistics.fmean(f):.1f}" if f else "—") + " / "
                         + (f"{statistics.fmean(o):.2f}" if o else "—"))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "![FD and D's overfitting over training](img/limited_data.png)", "",
              "<!-- reading: kept by scripts/limited_data.py -->"]
    doc = ROOT / "docs/limited_data.md"
    reading = ""
    if doc.exists() and "<!-- reading: kept by scripts/limited_data.py -->" in doc.read_text():
        reading = doc.read_text().split("<!-- reading: kept by scripts/limited_data.py -->", 1)[1]
    doc.write_text("\n".join(lines) + reading + ("" if reading else "\n"))
    print(f"ganbench: wrote {doc} and {img}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="G iterations per fit")
    parser.add_argument("--evals", type=int, default=8, help="evaluations per fit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--width", type=int, default=64, help="model.init_args.width")
    parser.add_argument("--samples", type=int, default=2000, help="generated samples per FD")
    parser.add_argument("--jobs", type=int, default=2, help="fits at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--out", default="runs/limited_data", help="run directories")
    parser.add_argument("--rerun", action="store_true", help="train again fits that already finished")
    args = parser.parse_args()
    main()
