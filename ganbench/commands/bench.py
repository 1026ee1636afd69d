"""``ganbench bench``: generator iterations per second of the ganbench training step against a
plain-PyTorch loop of the same networks, optimizers, losses and batch sizes, in the same process.

    ganbench bench --config configs/sngan.yaml [--steps 300] [--warmup 20] [--device cuda]
                   [--modes eager,compile,graph,bf16_cl_graph] [--tf32] [--block 25] [--repeats 1]
                   [--run-callbacks]

A mode names the fast paths it enables, joined by ``_``: ``eager`` (none), ``compile``
(torch.compile of G and D), ``graph`` (one CUDA graph per G iteration), ``bf16`` (bf16 autocast),
``cl`` (channels_last). For each mode the plain loop uses the same paths, written by hand.
Both loops run on random data already on the device (throughput does not depend on content) and
are timed after ``warmup`` iterations with a device synchronization around every timed stretch.
By default they are interleaved in blocks of ``--block`` iterations inside one Trainer run (see
:func:`ganbench_loop`); ``--block 0`` runs the plain loop first, then ganbench. One JSON line per
mode is printed with both G-it/s and the ratio ``ganbench / plain`` (medians over ``--repeats``).
Extra arguments after ``--`` go to the config parser, e.g. ``-- --model.init_args.width 32``.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from typing import Any

import torch

from ganbench import GanbenchError
from ganbench.commands.evaluate import CommandParser
from ganbench.nn.population import keep_freed_memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(config: str, overrides: list[str]):
    """The model and data module exactly as ``ganbench fit --config`` would build them."""
    from ganbench.cli import GanbenchCLI

    cli = GanbenchCLI(args=["--config", config, "--run.wandb", "false", *overrides], run=False)
    for root in cli.created_dirs:  # nothing is fitted: leave no empty run folder behind
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    cli.model.fit_max_steps = cli.trainer.max_steps  # the fit length the config asks for (fits/hour)
    return cli.model, cli.datamodule


def random_batches(model, dm, device: torch.device, n: int = 4) -> torch.Tensor:
    per_step = dm.batch_size * model.n_critic
    return torch.randn(n * per_step, *model.data_shape, device=device).clamp_(-1, 1)


class PlainLoop:
    """The reference: the module's own :meth:`~ganbench.models.base.GANModule.iteration` — the same
    losses, penalties, tricks, EMA and optimizers as the fit — run with plain ``backward``/``step``
    and nothing of Lightning around it, on a copy of the model, followed by the fit's own
    :meth:`~ganbench.models.engine.finish.Finish.finish` less what needs a Trainer (counting
    ``global_step``, reading the divergence flag, logging). It cannot do less work than the real
    path, so the ratio measures what Lightning's loop and ganbench's executor add.

    ``run(n)`` times ``n`` iterations (with a device synchronization at both ends), each on the next
    real batch of ``data``."""

    def __init__(self, model, data: torch.Tensor, batch_size: int, device: torch.device, mode: str = "eager"):
        from ganbench.models.engine.finish import StepResult

        parts = mode.split("_")
        m = copy.deepcopy(model).to(device)
        if device.type == "cpu":  # as the fit does (GANModule.on_fit_start)
            keep_freed_memory()
        m._direct_steps = True
        if "cl" in parts:
            m.generator.to(memory_format=torch.channels_last)
            m.discriminator.to(memory_format=torch.channels_last)
            data = data.contiguous(memory_format=torch.channels_last)
        if "compile" in parts:
            m.generator.compile()
            m.discriminator.compile()
        graph = "graph" in parts
        g_opt, d_opt = m.configure_optimizers()
        if graph:
            m.set_capturable(True, (g_opt, d_opt))
        amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in parts)
        n_critic = m.n_critic
        self.static = data[: batch_size * n_critic].clone()
        labels = torch.zeros(len(self.static), dtype=torch.long, device=device)
        chunks = m.split_batch((self.static, labels))
        # split_batch repeated the batch per replica: the eager loop copies into the chunks' storage
        self.static_chunks = chunks if m.population > 1 and not graph else None

        self.batches, self.device, self.done, self.model = data.split(batch_size * n_critic), device, 0, m
        if graph:  # the module's graph executor (warm-up, static check, one graph per phase, replay)
            from ganbench.models.graph import GraphStep

            step = GraphStep(m, type(m).graph_backend(), (self.static, labels), optimizers=(g_opt, d_opt),
                             iterate=lambda chunks: m.plain_iteration(chunks, (g_opt, d_opt), amp))
            self.static = step.static[0]

            def iteration() -> None:  # as the module's graph step
                m.host_values()
                result = step((self.static, labels))
                if step.fallback is not None:
                    raise GanbenchError(f"ganbench bench --modes graph: the step cannot be captured: {step.fallback}")
                m.finish(result, trainer=False)
        else:
            def iteration() -> None:
                m.host_values()
                m.finish(StepResult.of(m.iteration(chunks, g_opt, d_opt, lightning=False, autocast=amp, finish=False)),
                         trainer=False)

        self.iteration = iteration

    def run(self, n: int) -> float:
        """Seconds for ``n`` iterations."""
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            self.static.copy_(self.batches[self.done % len(self.batches)])  # a fresh real batch, as a loader gives
            if self.static_chunks is not None:
                for chunk, src in zip(self.static_chunks, self.static.chunk(self.model.n_critic)):
                    chunk.x.copy_(src.repeat(self.model.population, *([1] * (src.dim() - 1))))
            self.iteration()
            self.done += 1
        _sync(self.device)
        return time.perf_counter() - t0


def run_callbacks() -> list:
    """The callbacks of ``ganbench fit`` that do work on every training step: the G-iteration
    progress bar, ``Diagnostics`` at the default interval (50) and the resume-state bookkeeping
    (checkpoint, sample-grid and metric callbacks act only at their intervals and are left out)."""
    from ganbench.callbacks import GIterationBar
    from ganbench.callbacks.metrics import Diagnostics
    from ganbench.reliability import ResumeState

    return [GIterationBar(), Diagnostics(every_n_steps=50), ResumeState()]


MODE_OVERRIDES = {
    "compile": ["--model.init_args.compile", "true"],
    "graph": ["--model.init_args.cuda_graph", "true"],
    "cl": ["--model.init_args.channels_last", "true"],
    "bf16": ["--trainer.precision", "bf16-mixed"],
    "eager": [],
}


def ganbench_loop(model, data: torch.Tensor, steps: int, warmup: int, batch_size: int, device: torch.device,
                  plain: PlainLoop | None = None, block: int = 25, precision: str = "32-true",
                  extra_callbacks: list | None = None) -> dict[str, Any]:
    """G-it/s of the real ganbench path: the family module inside a Lightning Trainer (manual
    optimization, the module's own step, Lightning's loop and hooks).

    With ``plain``, the reference runs *interleaved*: after every ``block`` timed ganbench iterations
    the Trainer pauses (in ``on_train_batch_end``, outside the timed interval) while ``plain`` runs
    ``block`` iterations, until both have run ``steps``. Both loops then see the same machine
    state — clock drift or a busy neighbour on a shared machine hits both alike — which sequential
    runs cannot promise. ``block=0`` runs all of ``plain`` (warm-up and ``steps``) before the fit.
    Returns the G-it/s of both (``plain`` None without it) and the precision the Trainer ran with.
    ``extra_callbacks`` join the Trainer (see ``run_callbacks``)."""
    import lightning as L

    from ganbench.data import TensorLoader

    class Timer(L.Callback):
        t0: float | None = None
        ours = theirs = 0.0
        plain_done = 0

        def _plain_block(self, n: int) -> None:
            self.theirs += plain.run(n)
            self.plain_done += n

        def on_train_start(self, trainer, pl_module):
            if plain is not None:
                plain.run(warmup)
                if not block:  # one after the other: the whole plain measurement first
                    self._plain_block(steps)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup and self.t0 is None:
                _sync(device)
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            done = trainer.global_step - warmup
            if plain is None or self.t0 is None or self.plain_done >= steps or done >= steps or done % block:
                return
            _sync(device)
            self.ours += time.perf_counter() - self.t0
            self._plain_block(min(block, steps - self.plain_done))
            self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            _sync(device)
            self.ours += time.perf_counter() - self.t0
            if plain is not None and self.plain_done < steps:
                self._plain_block(steps - self.plain_done)

    labels = torch.zeros(len(data), dtype=torch.long, device=device)
    loader = TensorLoader(data, labels, batch_size=batch_size * model.n_critic, seed=0)
    timer = Timer()
    extra = list(extra_callbacks or [])
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=any(isinstance(cb, L.pytorch.callbacks.ProgressBar) for cb in extra),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer, *extra],
        max_epochs=-1,
    )
    trainer.fit(model, train_dataloaders=loader)
    return {"ganbench": steps / timer.ours, "plain": steps / timer.theirs if plain is not None else None,
            "precision": str(trainer.precision)}


def main(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        argv, overrides = argv[:i], argv[i + 1 :]
    else:
        overrides = []
    import argparse
    import textwrap

    first, _, rest = __doc__.partition("\n\n")  # the whole first paragraph, then the rest as written
    ap = CommandParser(prog="ganbench bench", description=textwrap.fill(" ".join(first.replace("``", "").split()), 100,
                                                                 break_on_hyphens=False),
                       epilog=rest.replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="an ordinary `ganbench fit` config, e.g. configs/sngan.yaml")
    ap.add_argument("--steps", type=int, default=300, help="timed G iterations per loop (default 300)")
    ap.add_argument("--warmup", type=int, default=20, help="untimed G iterations first (default 20)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda when available, else cpu")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions (both loops)")
    ap.add_argument("--modes", default="eager", help="comma-separated, e.g. eager,compile,graph,bf16_cl_graph")
    ap.add_argument("--repeats", type=int, default=1,
                    help="(plain, ganbench) measurements per mode, each in fresh copies; the medians are reported")
    ap.add_argument("--run-callbacks", action="store_true",
                    help="add the per-step callbacks of ganbench fit (progress bar, diagnostics, resume state)")
    ap.add_argument("--block", type=int, default=25,
                    help="interleave the loops in blocks of this many iterations (0: plain loop first, then ganbench)")
    ap.add_argument("--population", type=int, default=1,
                    help="also measure a population of this many replicas against one fit: fit-G-iterations/s "
                         "and fits/hour of both, in the same run")
    args = ap.parse_args(argv)
    for name, low in (("steps", 1), ("warmup", 0), ("repeats", 1), ("block", 0), ("population", 1)):
        if getattr(args, name) < low:
            raise GanbenchError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    from ganbench.models.base import GANModule

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GanbenchError("--device cuda was asked for but torch sees no CUDA device")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        bad = [p for p in mode.split("_") if p not in MODE_OVERRIDES]
        if bad:
            raise GanbenchError(f"--modes: unknown fast path {bad[0]!r} in {mode!r}; valid parts: "
                                f"{', '.join(MODE_OVERRIDES)}")
        if "graph" in mode and device.type not in GANModule.graph_backend.devices:
            raise GanbenchError(f"--modes {mode}: CUDA graphs need --device cuda")
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    populations = [1, args.population] if args.population > 1 else [1]
    for mode in modes:
        per_population = {}
        for population in populations:
            per_population[population] = measure(
                args, mode, [*overrides, "--model.init_args.population", str(population)], device)
            print(json.dumps(per_population[population]), flush=True)
        if args.population > 1:
            one, pop = per_population[1], per_population[args.population]
            fit_rate = args.population * pop["ganbench_g_it_per_s"]
            step_one, step_pop = interleaved_steps(args, mode, overrides, device)
            print(json.dumps({
                "mode": mode, "config": args.config, "population": args.population,
                "device": one["device"], "torch": torch.__version__,
                "one_fit_g_it_per_s": one["ganbench_g_it_per_s"],
                "population_fit_g_it_per_s": round(fit_rate, 3),
                "speedup": round(fit_rate / one["ganbench_g_it_per_s"], 3),
                "fits_per_hour_one": round(3600 * one["ganbench_g_it_per_s"] / one["max_steps"], 3),
                "fits_per_hour_population": round(3600 * fit_rate / one["max_steps"], 3),
                "fit_length_g_steps": one["max_steps"],
                "interleaved_step_one_g_it_per_s": round(step_one, 3),
                "interleaved_step_population_fit_g_it_per_s": round(args.population * step_pop, 3),
                "interleaved_step_speedup": round(args.population * step_pop / step_one, 3)}), flush=True)
    return 0


def interleaved_steps(args, mode: str, overrides: list[str], device: torch.device) -> tuple[float, float]:
    """G-it/s of the module's own step (:class:`PlainLoop`, no Lightning) for one fit and for the
    population, run in alternating blocks of ``--block`` (10 when 0) iterations so that drift and a
    busy neighbour hit both alike — the population's speedup that sequential measurements blur."""
    loops = []
    for population in (1, args.population):
        model, dm = build(args.config, [*overrides, "--model.init_args.population", str(population)])
        torch.manual_seed(0)
        loop = PlainLoop(model, random_batches(model, dm, device), dm.batch_size, device, mode)
        loop.run(args.warmup)
        loops.append(loop)
    block, spent = args.block or 10, [0.0, 0.0]
    for done in range(0, args.steps, block):
        for i, loop in enumerate(loops):
            spent[i] += loop.run(min(block, args.steps - done))
    return args.steps / spent[0], args.steps / spent[1]


def measure(args, mode: str, overrides: list[str], device: torch.device) -> dict[str, Any]:
    """One (plain, ganbench) measurement of ``mode`` (medians over ``--repeats``) as a JSON-able dict."""
    parts = mode.split("_")
    overrides_m = [x for part in parts for x in MODE_OVERRIDES[part]]
    precision = "bf16-mixed" if "bf16" in parts else "32-true"
    plains, ours = [], []
    warmup = args.warmup
    for _ in range(args.repeats):
        model, dm = build(args.config, [*overrides, *overrides_m])
        if "graph" in parts and warmup < 3 * model.graph_period() + 1:
            # 2P+1 checked eager iterations, then one capture per phase: none of it is a replay to time
            warmup = 3 * model.graph_period() + 1
            print(f"ganbench bench: --warmup {args.warmup} raised to {warmup} for mode {mode}: the graph "
                  f"executor's eager check and captures take the first {warmup} iterations", file=sys.stderr)
        torch.manual_seed(0)
        data = random_batches(model, dm, device)
        plain = PlainLoop(model, data, dm.batch_size, device, mode)
        run = ganbench_loop(model, data, args.steps, warmup, dm.batch_size, device, plain, args.block,
                            precision, run_callbacks() if args.run_callbacks else [])
        plains.append(run["plain"])
        ours.append(run["ganbench"])
    ratios = [o / p for o, p in zip(ours, plains)]
    result: dict[str, Any] = {
        "mode": mode, "config": args.config, "population": model.population, "tf32": args.tf32, "steps": args.steps,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "precision": run["precision"], "batch_size": dm.batch_size,
        "n_critic": model.n_critic,
        "plain_g_it_per_s": round(statistics.median(plains), 3),
        "ganbench_g_it_per_s": round(statistics.median(ours), 3),
        "ratio": round(statistics.median(ratios), 3), "warmup": warmup, "block": args.block,
        "run_callbacks": args.run_callbacks,
        "max_steps": int(model.fit_max_steps)}
    if args.repeats > 1:
        result["ratios"] = [round(r, 3) for r in ratios]
    return result
