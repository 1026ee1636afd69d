"""Fast paths on CPU: compiled and eager steps agree; the bench command measures both loops."""

import json

import pytest
import torch

from ganbench.models import SNGAN


def _losses(compile: bool, steps: int = 3) -> list[tuple[float, float]]:
    import lightning as L

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


def test_bench_prints_both_loops_and_their_ratio(capsys):
    from ganbench.cli import main

    code = main(["bench", "--config", "configs/sngan.yaml", "--steps", "3", "--warmup", "1", "--device", "cpu",
                 "--", "--data.dataset", "ring8", "--data.n_toy_samples", "1000", "--model.init_args.width", "8"])
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 1
    r = lines[0]
    assert r["mode"] == "eager" and r["device"] == "cpu" and r["n_critic"] == 5
    assert r["plain_g_it_per_s"] > 0 and r["ganbench_g_it_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["ganbench_g_it_per_s"] / r["plain_g_it_per_s"], abs=2e-3)


def test_bench_repeats_report_the_median_of_alternating_pairs(capsys):
    from ganbench.cli import main

    code = main(["bench", "--config", "configs/sngan.yaml", "--steps", "2", "--warmup", "1", "--device", "cpu",
                 "--repeats", "3", "--", "--data.dataset", "ring8", "--data.n_toy_samples", "1000",
                 "--model.init_args.width", "8"])
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 1 and len(lines[0]["ratios"]) == 3
    assert lines[0]["ratio"] == pytest.approx(sorted(lines[0]["ratios"])[1], abs=1e-3)


def test_bench_rejects_unknown_fast_path(capsys):
    from ganbench.cli import EXIT_USAGE, main

    assert main(["bench", "--config", "configs/sngan.yaml", "--modes", "eager,turbo", "--device", "cpu"]) == EXIT_USAGE
    assert "unknown fast path 'turbo'" in capsys.readouterr().err
