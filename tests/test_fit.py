"""`ganbench fit` end to end on CPU: every output of a run exists, parses and says the right thing."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from ganbench.cli import EXIT_USAGE, main
from tests.conftest import needs_fmnist
from tests.tiny import RING8_2000, TINY, tiny_fit


def wandb_records(root: Path) -> list:
    from tests.wandb_log import read_records

    files = list(root.glob("wandb/*run-*/run-*.wandb"))
    assert len(files) == 1, files
    return read_records(files[0])


def check_outputs(root: Path, steps: int) -> dict:
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["g_steps"] == steps
    assert summary["family"] == "sngan"
    assert summary["wall_s"] > 0
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    assert cfg["trainer"]["max_steps"] == steps
    assert cfg["model"]["class_path"] == "ganbench.models.SNGAN"
    assert (root / "checkpoints" / "last.ckpt").is_file()
    kept = sorted(p.name for p in (root / "checkpoints").glob("step_*.ckpt"))
    assert kept == [f"step_{s:07d}.ckpt" for s in range(2, steps + 1, 2)]
    samples = sorted(p.name for p in (root / "samples").glob("step_*.png"))
    assert samples == sorted({f"step_{s:07d}.png" for s in [*range(2, steps + 1, 2), steps]})
    with open(root / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"train/d_loss", "train/g_loss", "step"} <= set(rows[0])
    losses = [float(r["train/d_loss"]) for r in rows if r.get("train/d_loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    records = wandb_records(root)
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history", "config"} <= kinds
    history_keys = {item.key or "/".join(item.nested_key) for r in records if r.HasField("history")
                    for item in r.history.item}
    assert "train/d_loss" in history_keys and "samples/_type" in history_keys
    config_keys = {item.key for r in records if r.HasField("config") for item in r.config.update}
    assert "model" in config_keys and "data" in config_keys
    return summary


@needs_fmnist
def test_fit_sngan_on_fashion_mnist_writes_every_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))  # no feature net: metrics are skipped, said once
    root = tiny_fit(tmp_path / "run", "sngan", base=TINY).root
    assert "ganbench: no image metrics during training (no weights for feature net 'fmnist'" in capsys.readouterr().err
    check_outputs(root, 3)
    from ganbench.models import load_module

    module = load_module(root / "checkpoints" / "last.ckpt")
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    x = module.sample(5)
    assert x.shape == (5, 1, 32, 32) and x.abs().max() <= 1


def last_bar(err: str) -> str:
    """The last state the G-iteration progress bar drew."""
    return [part for part in err.replace("\n", "\r").split("\r") if part.startswith("G-iterations")][-1]


def test_fit_sngan_on_ring8(tmp_path, capsys):
    root = tiny_fit(tmp_path / "run", "sngan", *RING8_2000, "--run.diagnostics_every", "2", steps=4, base=TINY).root
    bar = last_bar(capsys.readouterr().out)
    assert "100%" in bar and " 4/4 " in bar and "train/d_loss=" in bar and "train/g_loss=" in bar
    summary = check_outputs(root, 4)
    assert summary["protocol"]["n_critic"] == 5
    # toy metrics at the last step: integers in range, and the picture
    assert summary["metrics"]["val/modes_covered_2k"] in range(9)
    assert 0.0 <= summary["metrics"]["val/high_quality_frac_2k"] <= 1.0
    assert summary["metrics"]["val/w1_exact_1k"] > 0
    assert (root / "samples" / "toy_step_0000004.png").is_file()
    assert any(k.startswith("diag/") for k in summary["metrics"])


def test_image_metrics_use_the_domain_feature_net_and_say_so(tmp_path, monkeypatch):
    """With digits feature weights in the cache, a digits run logs fd_digits_256 and records its protocol."""
    from ganbench.metrics.features import DomainCNN, save_domain_net

    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path, sha = save_domain_net(DomainCNN(resolution=8), "digits", accuracy=0.0)
    root = tiny_fit(tmp_path / "run", "sngan", "--data.dataset", "digits", "--data.resolution", "16", steps=2,
                    base=TINY).root
    summary = json.loads((root / "summary.json").read_text())
    assert summary["metrics"]["val/fd_digits_256"] > 0
    assert summary["protocol"]["feature_sha256"] == sha


def test_max_steps_counts_generator_iterations(tmp_path):
    """5 D updates + 1 G update per iteration: max_steps=4 means 4 G updates and 20 D updates."""
    root = tiny_fit(tmp_path / "run", "sngan", *RING8_2000, steps=4, base=TINY).root
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert ckpt["ganbench"]["d_steps"] == 20
    g_state, d_state = ckpt["optimizer_states"]
    assert {int(s["step"]) for s in g_state["state"].values()} == {4}
    assert {int(s["step"]) for s in d_state["state"].values()} == {20}


def test_resume_from_last_continues_the_count(tmp_path, capsys):
    root = tiny_fit(tmp_path / "run", "sngan", *RING8_2000, steps=2, base=TINY).root
    capsys.readouterr()
    tiny_fit(root, "sngan", *RING8_2000, "--ckpt_path", "last", steps=4, base=TINY)
    assert " 4/4 " in last_bar(capsys.readouterr().out)  # the bar continues from 2, not from 0
    summary = json.loads((root / "summary.json").read_text())
    assert summary["g_steps"] == 4 and summary["status"] == "completed"
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["ganbench"]["d_steps"] == 20


@pytest.mark.parametrize("config", sorted(str(p) for p in Path("configs").rglob("*.yaml")))
def test_every_config_instantiates(config, tmp_path):
    """Family configs as they are; fragments in sub-folders (trainer/, profiles/) on top of sngan.yaml."""
    from ganbench.cli import GanbenchCLI

    fragment = Path(config).parent != Path("configs")
    configs = ["--config", "configs/sngan.yaml", "--config", config] if fragment else ["--config", config]
    cli = GanbenchCLI(args=[*configs, "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model.generator is not None and cli.trainer is not None
    assert tuple(cli.model.data_shape) == tuple(cli.datamodule.shape)


def test_unknown_key_names_the_key(tmp_path, capsys):
    code = main(["fit", "--config", "configs/sngan.yaml", "--model.init_args.nonsense", "1",
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ganbench: error: model.init_args: Option 'nonsense' is not accepted (ganbench.models.SNGAN); "
                   "ganbench fit --help lists the options"]
    assert not (tmp_path / "run").exists()


def test_unknown_dataset_lists_the_valid_ones(tmp_path, capsys):
    code = main(["fit", "--config", "configs/sngan.yaml", "--data.dataset", "imagenet",
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganbench: error: data.dataset: expected one of fashion_mnist, ")
    assert "got 'imagenet'" in err[0]
    for name in ("fashion_mnist", "cifar10", "ring8", "grid25"):
        assert name in err[0]
    assert not (tmp_path / "run").exists()


def test_unbuildable_resolution_is_one_line(tmp_path, capsys):
    code = main(["fit", "--config", "configs/sngan.yaml", "--data.dataset", "digits", "--data.resolution", "24",
                 "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganbench: error: data.resolution=24 cannot be built")
    assert not (tmp_path / "run").exists()


def test_missing_dataset_offline_names_every_place(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GANBENCH_DATA", str(tmp_path / "nowhere"))
    code = main(["fit", "--config", "configs/sngan.yaml", "--data.dataset", "mnist", "--data.download", "false",
                 "--data.root", str(tmp_path / "empty"), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(tmp_path / "empty") in err[0] and str(tmp_path / "nowhere") in err[0]
    assert not (tmp_path / "run").exists()


def test_print_config_shows_linked_model(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "configs/sngan.yaml", "--print_config"])
    assert exc.value.code == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["model"]["init_args"]["loss"] == "hinge"
    assert out["model"]["init_args"]["n_critic"] == 5


def test_divergence_stops_the_run_with_its_own_status_and_exit_code(tmp_path, capsys):
    from ganbench.cli import EXIT_DIVERGED

    root = tmp_path / "run"
    code = tiny_fit(root, "sngan", *RING8_2000, "--model.init_args.divergence_threshold", "1e-9",
                    "--model.init_args.check_every", "4", steps=20, base=TINY, check=False).code
    assert code == EXIT_DIVERGED
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "diverged"
    # the flag is read every check_every=4 steps and before each sample grid and checkpoint (every 2)
    assert summary["divergence"]["step"] == 2 and summary["g_steps"] == 2
    assert "above 1e-09" in summary["divergence"]["reason"]
    assert summary["divergence"]["last_finite"] is None  # nothing was saved before G iteration 2
    assert "diverged at G iteration 2" in capsys.readouterr().err
    assert not (root / "checkpoints").exists()


def test_divergence_is_read_every_check_every_steps_between_saves(tmp_path):
    from ganbench.cli import EXIT_DIVERGED

    root = tmp_path / "run"
    code = tiny_fit(root, "sngan", *RING8_2000, "--run.sample_every", "100", "--run.checkpoint_every", "100",
                    "--model.init_args.divergence_threshold", "1e-9", "--model.init_args.check_every", "3",
                    steps=20, base=TINY, check=False).code
    assert code == EXIT_DIVERGED
    summary = json.loads((root / "summary.json").read_text())
    assert summary["divergence"]["step"] == 3 and summary["g_steps"] == 3


def test_any_family_can_use_the_patchgan_discriminator(tmp_path):
    """d_arch patch: D scores every 70x70-style patch and the objective averages over them."""
    root = tiny_fit(tmp_path / "run", "sngan", "--data.dataset", "digits", "--data.resolution", "16",
                    "--model.init_args.d_arch", "patch", "--run.metrics_every", "0", steps=2, base=TINY).root
    from ganbench.models import load_module
    from ganbench.nn.patch import PatchDiscriminator

    module = load_module(root / "checkpoints" / "last.ckpt")
    assert isinstance(module.discriminator, PatchDiscriminator)
    assert module.discriminator(torch.zeros(3, 1, 16, 16)).shape == (3, 1, 6, 6)  # (16/2 - 2)^2 patches
    assert json.loads((root / "summary.json").read_text())["status"] == "completed"
