"""Reproduce Table 1 of PacGAN (Lin et al. 2018): GAN and PacGAN2/3/4 on the 2-D ring and grid.

Every fit is the protocol of ``configs/pacgan_ring.yaml`` / ``configs/pacgan_grid.yaml`` (read through
ganbench's own CLI parser, so the script and ``ganbench fit --config ...`` train the same model on the
same data) with ``model.init_args.pack``, ``seed_everything`` and ``trainer.max_steps`` set per fit.
Every ``--eval-every`` G iterations (1000 = one epoch of the paper) G draws ``--samples`` points from a
fixed latent batch, in inference mode, scored with :func:`ganbench.metrics.toy.mode_metrics` as the
paper's code scores them (high quality within 3σ of the nearest mode, a mode captured by one
high-quality sample, reverse KL of the mode histogram against uniform). The last evaluation is the
table's number; all of them are the curve.

``--families`` adds rows for other families on the same protocol: the same data, networks (maxout D,
batch-norm MLP G), initialization, batch, iterations and packing, with the family's own loss,
D normalization, penalty, n_critic and paper optimizer (e.g. ``--families gan wgan_gp sngan unrolled``).
Every row is built once before any fit: a family that cannot take the protocol (the energy-based
families' own autoencoder D; a population of a family whose step is its own, such as Unrolled) is
refused in one line before hours of training. Arguments after ``--`` go to the config parser for
every fit of the run, after the family's own
(e.g. ``--families lsgan -- --model.init_args.d_norm none``: LSGAN's loss without its batch-norm D;
``--families ebgan -- --model.init_args.d_arch same --model.init_args.d_width null
--model.init_args.d_depth 0``: EBGAN with its own autoencoder D, of the config's width, in place of the
maxout D, everything else the protocol's).

Full protocol (400 000 iterations, 10 seeds, 16 fits per seed)::

    python scripts/reproduce_pacgan.py

writes ``docs/reproductions/pacgan.md`` (published vs measured, mean ± standard error over seeds),
``pacgan.json`` (every fit's curve) and ``pacgan_samples.png`` (the final samples of the first seed).

Every fit that finishes is appended to ``.pacgan.finished.jsonl`` beside the report (the stem of
``--out``) until the report is written: a run interrupted after hours keeps its finished fits, and the
same command started again trains only the others (the report then says how many it read back).
The report and its JSON are written through a temporary file and a rename.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

CONFIGS = {"ring": "configs/pacgan_ring.yaml", "grid": "configs/pacgan_grid.yaml"}
MODES = {"ring": 8, "grid": 25}
#: Table 1 of the paper (mean, standard error over 10 trials): modes, high-quality %, reverse KL
PUBLISHED = {
    ("ring", 1): ((6.3, 0.5), (98.2, 0.2), (0.45, 0.09)),
    ("ring", 2): ((7.9, 0.1), (95.6, 2.0), (0.07, 0.03)),
    ("ring", 3): ((7.8, 0.1), (97.7, 0.3), (0.10, 0.02)),
    ("ring", 4): ((7.8, 0.1), (95.9, 1.4), (0.07, 0.02)),
    ("grid", 1): ((17.3, 0.8), (94.8, 0.7), (0.70, 0.07)),
    ("grid", 2): ((23.8, 0.7), (91.3, 0.8), (0.13, 0.04)),
    ("grid", 3): ((24.6, 0.4), (94.2, 0.4), (0.06, 0.02)),
    ("grid", 4): ((24.8, 0.2), (93.6, 0.6), (0.04, 0.01)),
}
PROTOCOL_STEPS = 400_000
#: the latent batch every evaluation draws from (the paper's code fixes one too, extensions.py line 54)
Z_SEED = 2333


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


MACHINE = f"{os.cpu_count()}-core CPU ({_cpu_name()})"


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / √n; NaN for one value)."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    se = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
    return statistics.fmean(finite), se


def agrees(measured: tuple[float, float], published: tuple[float, float]) -> bool | None:
    """Within 2 combined standard errors, ``2·√(se_m² + se_p²)``; None when the measured SE is undefined."""
    (m, se_m), (p, se_p) = measured, published
    if math.isnan(se_m) or math.isnan(m):
        return None
    return abs(m - p) <= 2 * math.sqrt(se_m**2 + se_p**2)


def family_args(family: str) -> list[str]:
    """Config overrides that make the protocol's GAN another family: its class, its paper optimizer,
    and its own defaults for the objective and D's normalization where the config fixes them."""
    if family == "gan":
        return []
    import inspect

    from ganbench.models import FAMILIES

    cls = FAMILIES[family]
    own = inspect.signature(cls.__init__).parameters
    args = ["--model.class_path", f"{cls.__module__}.{cls.__qualname__}",
            "--model.init_args.g_optimizer", "null", "--model.init_args.d_optimizer", "null"]
    for key in ("loss", "d_norm"):
        if key in own:
            args += [f"--model.init_args.{key}", str(own[key].default)]
    return args


def row_name(family: str, pack: int) -> str:
    if family == "gan":
        return "GAN" if pack == 1 else f"PacGAN{pack}"
    return family if pack == 1 else f"{family} + pack {pack}"


def quiet() -> None:
    """The script prints its own lines: Lightning's banners ("GPU available", seeds, adverts) and the
    warnings of building fits through the CLI in a process that has its own arguments are not shown."""
    import lightning.pytorch  # noqa: F401  (its import sets its loggers' level: set ours after it)

    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def fit_key(data: str, family: str, pack: int, seed: int, steps: int, eval_every: int, samples_scored: int,
            config_args: list[str] | tuple[str, ...], **_record) -> tuple:
    """What makes a finished fit reusable by a later invocation: its row, seed and protocol (the
    fields of a fit's record; ``fit_key(**record)``)."""
    return data, family, pack, seed, steps, eval_every, samples_scored, tuple(config_args)


def read_finished(path: Path) -> dict[tuple, dict]:
    """The fits an interrupted invocation finished, one JSON line each (a line cut short by the
    interruption is ignored: that fit runs again)."""
    finished = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                fit = json.loads(line)
                finished[fit_key(**fit)] = fit
    return finished


def write_atomic(path: Path, text: str) -> None:
    """Through a temporary file and a rename: a reader or a crash sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build(data: str, family: str, pack: int, seed: int, steps: int, population: int = 1,
          config_args: list[str] | tuple[str, ...] = ()):
    """The model and data module of the config, with this fit's family, packing, seed and length;
    ``population`` > 1 trains the seeds ``seed … seed + population - 1`` as one batched fit;
    ``config_args`` are further config overrides (after the family's)."""
    from argparse import ArgumentError

    from ganbench import GanbenchError, find_user_error
    from ganbench.cli import GanbenchCLI, parse_error_line

    root = tempfile.mkdtemp(prefix="pacgan-")
    try:
        cli = GanbenchCLI(args=["--config", CONFIGS[data], *family_args(family), *config_args,
                                "--model.init_args.pack", str(pack),
                                "--model.init_args.population", str(population),
                                "--seed_everything", str(seed), "--trainer.max_steps", str(steps),
                                "--trainer.logger", "false", "--trainer.default_root_dir", root],
                          run=False, parser_kwargs={"exit_on_error": False})
    except ArgumentError as err:  # what `ganbench fit` would say, in one line
        raise GanbenchError(parse_error_line(str(err))) from None
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        raise user_error from None
    return cli.model, cli.datamodule


def fit_one(job: tuple[str, str, int, int | list[int], argparse.Namespace]) -> list[dict]:
    """One fit — or, with a list of consecutive seeds, one population fit of them (replica r is the
    fit with seed ``seeds[0] + r``): each seed's curve of (iteration, modes, high-quality fraction,
    reverse KL) and final samples."""
    data, family, pack, seeds, args = job
    seeds = seeds if isinstance(seeds, list) else [seeds]
    seed = seeds[0]
    import lightning as L
    import torch

    from ganbench.metrics.toy import mode_metrics

    quiet()
    torch.set_num_threads(args.threads)
    model, dm = build(data, family, pack, seed, args.steps, population=len(seeds),
                      config_args=getattr(args, "config_args", ()))
    z = torch.randn(args.samples, model.latent_dim, generator=torch.Generator().manual_seed(Z_SEED))
    curves: list[list[dict]] = [[] for _ in seeds]

    class Score(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *rest) -> None:
            step = trainer.global_step
            if step % args.eval_every == 0 or step == args.steps:
                fakes = pl_module.sample(args.samples, z=z).float().cpu().reshape(len(seeds), args.samples, -1)
                for s, fake, curve in zip(seeds, fakes, curves):  # every replica on the same latents
                    mm = mode_metrics(fake, dm.mixture.centers, dm.mixture.std)
                    curve.append({"step": step, "modes": mm["modes_covered"], "hq": mm["high_quality_frac"],
                                  "rkl": mm["reverse_kl"], "kl_modes": mm["kl_to_uniform"]})
                    print(f"{data} {row_name(family, pack)} seed {s}: step {step}/{args.steps} modes "
                          f"{mm['modes_covered']:.0f} hq {100 * mm['high_quality_frac']:.1f}% "
                          f"rkl {mm['reverse_kl']:.3f}", flush=True)

    L.seed_everything(seed, verbose=False)
    trainer = L.Trainer(max_steps=args.steps, accelerator=args.accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Score()])
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    wall = time.perf_counter() - t0
    finals = model.sample(args.samples, z=z).float().cpu().reshape(len(seeds), args.samples, -1)
    # one per replica; a fit that trained to the end is "completed", as ganbench's summary.json says
    status = [("diverged" if d else "completed" if model.status == "running" else model.status)
              for d in model.replica_divergence]
    return [{"data": data, "family": family, "pack": pack, "seed": s, "steps": args.steps,
             "eval_every": args.eval_every, "samples_scored": args.samples, "status": st,
             "wall_s": wall, "population": len(seeds), "config_args": list(getattr(args, "config_args", ())),
             "curve": curve,
             "samples": final.tolist() if s == args.seeds[0] else None}
            for s, st, curve, final in zip(seeds, status, curves, finals)]


def figure(fits: list[dict], path: Path) -> None:
    """Final samples of the first seed, one panel per (data, pack), with the true modes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ganbench.data import make_toy

    shown = [f for f in fits if f["samples"] is not None]
    datas = sorted({f["data"] for f in shown}, key=lambda d: d != "ring")
    models = sorted({(f["family"], f["pack"]) for f in shown}, key=lambda m: (m[0] != "gan", m))
    fig, axes = plt.subplots(len(datas), len(models), figsize=(2.6 * len(models), 2.6 * len(datas)), squeeze=False)
    for f in shown:
        ax = axes[datas.index(f["data"])][models.index((f["family"], f["pack"]))]
        centers = make_toy("ring8_pacgan" if f["data"] == "ring" else "grid25").centers
        xs = list(zip(*f["samples"]))
        ax.scatter(xs[0], xs[1], s=1, alpha=0.3, c="k", rasterized=True)
        ax.scatter(centers[:, 0], centers[:, 1], s=12, marker="x", c="tab:red")
        lim = 1.5 if f["data"] == "ring" else 6
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
        last = f["curve"][-1]
        name = row_name(f["family"], f["pack"])
        ax.set_title(f"{f['data']} {name}: {last['modes']:.0f} modes, {100 * last['hq']:.0f}% hq", fontsize=8)
    sep = " " if len(models) > 2 else "\n"  # one or two panels: the title would not fit on one line
    fig.suptitle(f"final samples, seed {shown[0]['seed']}, {shown[0]['steps']} iterations{sep}(red x: modes)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(ms: tuple[float, float], scale: float = 1.0, digits: int = 2) -> str:
    m, se = ms
    if math.isnan(m):
        return "n/a"
    return f"{scale * m:.{digits}f}" + ("" if math.isnan(se) else f" ± {scale * se:.{digits}f}")


def render(fits: list[dict], args: argparse.Namespace, command: str, wall: float, figure_name: str) -> str:
    import lightning as L
    import torch

    seeds = sorted({f["seed"] for f in fits})
    full = args.steps == PROTOCOL_STEPS
    lines = [
        "# Reproduction: PacGAN, Table 1 (2-D ring and grid)",
        "",
        f"- command: `{command}`",
        f"- machine: {MACHINE}, {args.jobs} {'population' if args.population else 'fit'}(s) at a time, "
        f"{args.threads} torch thread(s) each, "
        f"accelerator {args.accelerator}; date {time.strftime('%Y-%m-%d')}; wall time {wall / 60:.1f} min"
        + (f" (after an interrupted invocation had finished {args.reused} of the fits)"
           if getattr(args, "reused", 0) else ""),
        f"- torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}",
        f"- fits: {len(fits)} = data {sorted({f['data'] for f in fits})} "
        f"× family {sorted({f['family'] for f in fits})} "
        f"× pack {sorted({f['pack'] for f in fits})} "
        f"× seeds {seeds}; {args.steps} G iterations each "
        + ("(the paper's 400 epochs × 1000)" if full else f"(**{args.steps / PROTOCOL_STEPS:.2%} of the paper's "
                                                          f"400 000**: a reduced run)")
        + f"; scored every {args.eval_every} iterations on {args.samples} samples"
        + (f"; config overrides for every fit: `{' '.join(args.config_args)}`" if args.config_args else ""),
        "",
        "Published: mean ± standard error over 10 trials (Table 1 of the paper). Measured: mean ± standard",
        f"error over {len(seeds)} seed(s) of the last evaluation. *agrees*: every measured mean within 2 combined",
        "standard errors of the published one" + ("." if full else "; not judged for a reduced run (the numbers are "
                                                                  "not comparable with the 400 000-iteration ones)."),
        "",
        "| data | model | modes (published) | modes (measured) | high-quality % (published) | high-quality % "
        "(measured) | reverse KL (published) | reverse KL (measured) | agrees |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for f in fits:
        groups.setdefault((f["data"], f["family"], f["pack"]), []).append(f)
    order = sorted(groups, key=lambda k: (k[0] != "ring", k[1] != "gan", k[1], k[2]))
    for key in order:
        runs = groups[key]
        measured = [mean_se([r["curve"][-1][k] for r in runs]) for k in ("modes", "hq", "rkl")]
        pub = PUBLISHED.get((key[0], key[2])) if key[1] == "gan" else None
        verdicts = [agrees(m, p) for m, p in zip(measured, pub)] if pub and full else [None]
        verdict = "—" if None in verdicts else ("yes" if all(verdicts) else "**no**")
        name = row_name(key[1], key[2])
        p = pub or ((math.nan, math.nan),) * 3
        lines.append(f"| {key[0]} | {name} | {fmt(p[0], digits=1)} | {fmt(measured[0], digits=1)} | "
                     f"{fmt(p[1], digits=1)} | {fmt(measured[1], 100, 1)} | {fmt(p[2])} | {fmt(measured[2])} "
                     f"| {verdict} |")
    steps = sorted({c["step"] for f in fits for c in f["curve"]})
    lines += ["", "## Curve: mean over seeds at each evaluation (modes / high-quality % / reverse KL)", "",
              "| data | model | " + " | ".join(f"{s}" for s in steps) + " |",
              "| --- | --- | " + " | ".join("---:" for _ in steps) + " |"]
    for key in order:
        cells = []
        for s in steps:
            at = [c for r in groups[key] for c in r["curve"] if c["step"] == s]
            mo, hq, rk = (mean_se([c[k] for c in at])[0] for k in ("modes", "hq", "rkl"))
            cells.append(f"{mo:.1f} / {100 * hq:.0f} / {rk:.2f}")
        lines.append(f"| {key[0]} | {row_name(key[1], key[2])} | " + " | ".join(cells) + " |")
    lines += ["", "Reverse KL is undefined (NaN) for a fit without a high-quality sample; means and standard errors "
              "of reverse KL are over the fits that have one."]
    bad = [f"{f['data']} {row_name(f['family'], f['pack'])} seed {f['seed']}: {f['status']}"
           for f in fits if f["status"] != "completed"]
    if bad:
        lines += ["", "Fits that stopped early: " + "; ".join(bad)]
    lines += ["", f"![final samples of the first seed]({figure_name})"]
    return "\n".join(lines) + "\n"


#: what follows this line in the output file is written by hand and kept when the tables are regenerated
NOTES = "<!-- reading: kept by scripts/reproduce_pacgan.py -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reproduce_pacgan.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ring", "grid"], choices=list(CONFIGS))
    parser.add_argument("--packs", nargs="+", type=int, default=[1, 2, 3, 4], help="1 = GAN, m = PacGANm")
    parser.add_argument("--families", nargs="+", default=["gan"], help="ganbench families (FAMILIES keys)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--steps", type=int, default=PROTOCOL_STEPS, help="G iterations per fit")
    parser.add_argument("--eval-every", type=int, default=1000, help="G iterations between scorings")
    parser.add_argument("--samples", type=int, default=2500, help="generated samples scored")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per fit")
    parser.add_argument("--jobs", type=int, default=1, help="fits at the same time (processes)")
    parser.add_argument("--population", action="store_true",
                        help="train a row's seeds (consecutive) as one population fit: one batched step")
    parser.add_argument("--out", type=Path, default=Path("docs/reproductions/pacgan.md"))
    argv = list(sys.argv[1:] if argv is None else argv)
    own, config_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    args.config_args = config_args
    for key in ("steps", "eval_every", "samples", "threads", "jobs"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if any(p < 1 for p in args.packs):
        parser.error(f"--packs must be >= 1, got {args.packs}")
    from ganbench.models import FAMILIES

    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        parser.error(f"--families: unknown {', '.join(unknown)}; choose from {', '.join(FAMILIES)}")
    os.environ.setdefault("WANDB_MODE", "disabled")
    from ganbench import GanbenchError

    quiet()
    for data in args.data:  # every row builds, before hours of fits: a family whose own D replaces the
        for family in args.families:  # protocol's, or a bad config argument, is one line now
            for p in args.packs:
                try:
                    build(data, family, p, args.seeds[0], 1, population=len(args.seeds) if args.population else 1,
                          config_args=config_args)
                except GanbenchError as err:
                    parser.error(f"{data} {row_name(family, p)}: {err}")
    if args.population:
        if args.seeds != list(range(args.seeds[0], args.seeds[0] + len(args.seeds))):
            parser.error(f"--population trains consecutive seeds (replica r = first seed + r), got {args.seeds}")
        jobs = [(d, fam, p, list(args.seeds), args) for d in args.data for fam in args.families for p in args.packs]
    else:
        jobs = [(d, fam, p, s, args) for d in args.data for fam in args.families for p in args.packs
                for s in args.seeds]
    n_fits = len(jobs) * (len(args.seeds) if args.population else 1)
    # every finished fit is kept, one JSON line each, until the report is written: an interrupted run
    # started again with the same arguments reuses them and trains only the others
    out = args.out
    finished_path = out.with_name(f".{out.stem}.finished.jsonl")
    finished = read_finished(finished_path)

    def reused(job) -> list[dict] | None:
        d, fam, p, seeds, _ = job
        keys = [fit_key(d, fam, p, s, args.steps, args.eval_every, args.samples, config_args)
                for s in (seeds if isinstance(seeds, list) else [seeds])]
        return [finished[k] for k in keys] if all(k in finished for k in keys) else None

    earlier = [reused(job) for job in jobs]
    fits = [fit for done in earlier if done for fit in done]
    args.reused = len(fits)
    jobs = [job for job, done in zip(jobs, earlier) if done is None]
    print(f"{n_fits} fits of {args.steps} G iterations"
          + (f", {len(args.seeds)} per population" if args.population else "")
          + (f"; {len(fits)} finished before, read from {finished_path}" if fits else ""), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with (mp.get_context("spawn").Pool(args.jobs) if args.jobs > 1 and len(jobs) > 1 else contextlib.nullcontext()
          as pool, open(finished_path, "a") as log):
        for batch in pool.imap_unordered(fit_one, jobs) if pool else map(fit_one, jobs):
            for fit in batch:
                log.write(json.dumps(fit) + "\n")
                log.flush()
                os.fsync(log.fileno())
                fits.append(fit)
                last = fit["curve"][-1]
                print(f"[{len(fits)}/{n_fits}] {fit['data']} {row_name(fit['family'], fit['pack'])} seed "
                      f"{fit['seed']}: {last['modes']:.0f} modes, {100 * last['hq']:.1f}% high quality, "
                      f"reverse KL {last['rkl']:.3f} ({fit['wall_s']:.0f} s)", flush=True)
    wall = time.perf_counter() - t0
    command = "python scripts/reproduce_pacgan.py " + " ".join(argv)
    fig_path = out.with_name(out.stem + "_samples.png")
    figure(fits, fig_path)
    text = render(fits, args, command.strip(), wall, fig_path.name)
    if out.exists() and NOTES in out.read_text():  # the hand-written reading stays
        text += "\n" + NOTES + out.read_text().split(NOTES, 1)[1]
    raw = [{k: v for k, v in f.items() if k != "samples"} for f in fits]
    record = {"command": command.strip(), "wall_s": wall, "reused_fits": args.reused, "fits": raw}
    write_atomic(out.with_suffix(".json"), json.dumps(record, indent=1))
    write_atomic(out, text)
    finished_path.unlink()  # the report holds them now
    print(f"wrote {out}, {out.with_suffix('.json')}, {fig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
