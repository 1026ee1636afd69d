"""Fast paths on CPU: compiled and eager steps agree; the bench command measures both loops."""

import json

import lightning as L
import pytest
import torch

from ganbench.models import FAMILIES, SNGAN


def _losses(compile: bool, steps: int = 3) -> list[tuple[float, float]]:
    from ganbench.data import GANDataModule

    torch.manual_seed(0)
    dm = GANDataModule("ring8", n_toy_samples=512, batch_size=16)
    model = SNGAN(data_shape=dm.shape, num_classes=dm.num_classes, latent_dim=8, width=16, compile=compile,
                  d_norm="none", g_norm="none", n_critic=2)
    seen: list[tuple[float, float]] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            m = trainer.callback_metrics
            seen.append((float(m["train/d_loss"]), float(m["train/g_loss"])))

    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                        log_every_n_steps=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return seen


def test_compiled_step_matches_eager_losses():
    """torch.compile changes kernels, not math: losses of the first steps agree to 1e-5."""
    eager, compiled = _losses(False), _losses(True)
    assert len(eager) == len(compiled) == 3
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), atol=1e-5, rtol=1e-5)


def test_cuda_graph_falls_back_on_cpu_with_the_reason(tmp_path, capsys):
    from ganbench.cli import main

    code = main(["fit", "--config", "configs/sngan.yaml", "--trainer.default_root_dir", str(tmp_path / "run"),
                 "--trainer.max_steps", "2", "--trainer.accelerator", "cpu", "--model.init_args.width", "4",
                 "--data.dataset", "ring8", "--data.n_toy_samples", "1000", "--data.batch_size", "8",
                 "--model.init_args.cuda_graph", "true", "--run.wandb", "false"])
    assert code == 0
    out = capsys.readouterr()
    assert "model.cuda_graph falls back to the eager step because it is not on a CUDA device" in out.out + out.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["g_steps"] == 2 and summary["status"] == "completed"


def bench_lines(capsys, *args: str) -> list[dict]:
    """The JSON lines of ``ganbench bench`` on a tiny ring8 SNGAN on the CPU."""
    from ganbench.cli import main

    code = main(["bench", "--config", "configs/sngan.yaml", "--warmup", "1", "--device", "cpu", *args,
                 "--", "--data.dataset", "ring8", "--data.n_toy_samples", "1000", "--model.init_args.width", "8"])
    assert code == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]


def test_bench_prints_both_loops_and_their_ratio(capsys):
    lines = bench_lines(capsys, "--steps", "3")
    assert len(lines) == 1
    r = lines[0]
    assert r["mode"] == "eager" and r["device"] == "cpu" and r["n_critic"] == 5
    assert r["plain_g_it_per_s"] > 0 and r["ganbench_g_it_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["ganbench_g_it_per_s"] / r["plain_g_it_per_s"], abs=2e-3)


def test_bench_repeats_report_the_median_measurement(capsys):
    lines = bench_lines(capsys, "--steps", "2", "--repeats", "3")
    assert len(lines) == 1 and len(lines[0]["ratios"]) == 3
    assert lines[0]["ratio"] == pytest.approx(sorted(lines[0]["ratios"])[1], abs=1e-3)


def test_bench_rejects_unknown_fast_path(capsys):
    from ganbench.cli import EXIT_USAGE, main

    assert main(["bench", "--config", "configs/sngan.yaml", "--modes", "eager,turbo", "--device", "cpu"]) == EXIT_USAGE
    assert "unknown fast path 'turbo'" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--block", "-2"], "--block must be >= 0, got -2"),
    (["--block", "x"], "ganbench bench: argument --block: invalid int value: 'x'"),
])
def test_bench_bad_numbers_are_one_line(capsys, args, message):
    from ganbench.cli import EXIT_USAGE, main

    assert main(["bench", "--config", "configs/sngan.yaml", "--device", "cpu", *args]) == EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines() == [f"ganbench: error: {message}"]


# --------------------------------------------------------------------------------------- direct steps
class CountStepHooks(L.Callback):
    """A callback that implements the per-step hooks, so Lightning's full dispatch must be used."""

    def __init__(self):
        self.calls = {"on_before_backward": 0, "on_after_backward": 0, "on_before_optimizer_step": 0}

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module):
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls["on_before_optimizer_step"] += 1


def _fit_toy(family: str, callbacks: list, steps: int = 3, **kw):
    from ganbench.data import GANDataModule
    from ganbench.models import FAMILIES

    L.seed_everything(0, verbose=False)
    dm = GANDataModule("ring8", n_toy_samples=512, batch_size=16)
    try:
        model = FAMILIES[family](data_shape=dm.shape, num_classes=dm.num_classes, arch="mlp", width=16, **kw)
    except Exception:
        return None  # a family that needs images does not build on 2-D data
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return model


@pytest.mark.parametrize("family", list(FAMILIES))
def test_direct_steps_are_lightnings_steps_without_the_dispatch(family):
    """Every toy-capable family: a run that calls backward/step directly ends with exactly the same
    networks, optimizer states and step count as one forced through Lightning's hook dispatch (a
    callback implementing the per-step hooks), and that callback sees every D and G step."""
    kw = {"grad_clip": 1.0} if family == "sngan" else {}
    direct = _fit_toy(family, [], **kw)
    if direct is None:
        pytest.skip(f"{family} does not build on 2-D data")
    counter = CountStepHooks()
    dispatched = _fit_toy(family, [counter], **kw)
    assert direct._direct_steps is True and direct.direct_step_blocker() is None
    assert dispatched._direct_steps is False
    assert dispatched.direct_step_blocker() == f"callback {type(counter).__name__} implements on_before_backward"
    assert direct.global_step == dispatched.global_step == 3
    updates = 3 * (dispatched.n_critic + 1)
    assert counter.calls == dict.fromkeys(counter.calls, updates)
    for a, b in zip(direct.state_dict().values(), dispatched.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for opt_a, opt_b in zip(direct.trainer.optimizers, dispatched.trainer.optimizers, strict=True):
        for sa, sb in zip(opt_a.state.values(), opt_b.state.values(), strict=True):
            for key in sa:
                assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key]))


def test_what_keeps_lightnings_dispatch():
    """Each thing that adds work around a step is named: a profiler, the module's own hook, DDP's
    backward preparation, mixed precision's optimizer step."""
    from types import SimpleNamespace

    from lightning.pytorch.plugins.precision import MixedPrecision, Precision
    from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    class Hooked(SNGAN):
        def on_after_backward(self):
            pass

    def blocker(module_cls=SNGAN, profiler=None, strategy=None, plugin=None):
        model = module_cls(data_shape=(2,), latent_dim=4, width=8)
        strategy = strategy or SingleDeviceStrategy(torch.device("cpu"))
        strategy.precision_plugin = plugin or Precision()
        model._trainer = SimpleNamespace(profiler=profiler or PassThroughProfiler(), callbacks=[], strategy=strategy)
        return model.direct_step_blocker()

    assert blocker() is None
    assert blocker(profiler=SimpleProfiler()) == "a profiler (SimpleProfiler) times the hooks"
    assert blocker(Hooked) == "the sngan module implements on_after_backward"
    assert blocker(strategy=DDPStrategy()) == "DDPStrategy adds work to pre_backward"
    assert blocker(plugin=MixedPrecision("bf16-mixed", "cpu")) == "MixedPrecision adds work to pre_backward"


def test_bench_runs_ganbench_with_the_precision_of_the_mode(capsys):
    """A bf16 mode trains the ganbench side under bf16-mixed too, not only the plain loop."""
    lines = bench_lines(capsys, "--steps", "2", "--modes", "bf16")
    assert [(r["mode"], r["precision"]) for r in lines] == [("bf16", "bf16-mixed")]


@pytest.mark.parametrize(("block", "plain_runs"), [
    (3, [(0, 2), (5, 3), (8, 3), (9, 1)]),  # warm-up, a block after every 3 timed steps, the remaining 1 at the end
    (0, [(0, 2), (0, 7)]),  # one after the other: all of the plain loop before ganbench's first step
])
def test_bench_runs_both_loops_the_same_number_of_steps_in_the_right_order(block, plain_runs):
    from ganbench.commands.bench import PlainLoop, build, ganbench_loop, random_batches

    model, dm = build("configs/sngan.yaml", ["--data.dataset", "ring8", "--data.n_toy_samples", "1000",
                                             "--model.init_args.width", "8"])
    data = random_batches(model, dm, torch.device("cpu"))
    plain = PlainLoop(model, data, dm.batch_size, torch.device("cpu"))
    calls = []  # (ganbench G iterations done, plain iterations run) at every plain run
    run_plain = plain.run
    plain.run = lambda n: calls.append((model.global_step, n)) or run_plain(n)
    run = ganbench_loop(model, data, steps=7, warmup=2, batch_size=dm.batch_size, device=torch.device("cpu"),
                        plain=plain, block=block)
    assert calls == plain_runs
    assert plain.done == 2 + 7
    assert model.global_step == 2 + 7
    assert run["ganbench"] > 0 and run["plain"] > 0 and run["precision"] == "32-true"
