"""`ganbench evaluate` and `ganbench sample` on real ganbench checkpoints (tiny SNGANs, CPU)."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from ganbench import GanbenchError
from ganbench.commands import evaluate, sample
from ganbench.data import GANDataModule
from ganbench.metrics import load_feature_net, mode_metrics
from ganbench.metrics.features import DomainCNN, save_domain_net
from ganbench.metrics.sampling import generate
from ganbench.models import SNGAN, load_module


def make_ckpt(tmp_path: Path, dm: GANDataModule) -> Path:
    torch.manual_seed(0)
    model = SNGAN(data_shape=dm.shape, num_classes=dm.num_classes, latent_dim=8, width=4, n_critic=1)
    run = tmp_path / "run"
    trainer = L.Trainer(
        default_root_dir=run,
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    path = run / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def digits_ckpt(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    save_domain_net(DomainCNN(1, 8, 10), "digits", accuracy=0.0)
    return make_ckpt(tmp_path, GANDataModule("digits", resolution=16, batch_size=16))


def test_evaluate_writes_protocol_json_next_to_the_run(digits_ckpt, capsys):
    assert evaluate.main(["--ckpt", str(digits_ckpt), "--n-fake", "120", "--n-real", "150"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    written = digits_ckpt.parent.parent / "eval_digits_120.json"
    stored = json.loads(written.read_text())
    assert printed["written_to"] == str(written) and {**stored, "written_to": str(written)} == printed
    assert sorted(stored["metrics"]) == sorted(
        [
            "fd_digits_120",
            "fd_digits_120_std_5x24",  # FD's spread over 5 disjoint subsets of 24 samples
            "is_digits_120",
            "is_digits_120_std_10x12",
            "kid_digits_120",
            "kid_digits_120_std_100x120",  # KID subsets of min(1000, n_fake 120, n_real 150)
            "precision_digits_120",
            "recall_digits_120",
            "density_digits_120",
            "coverage_digits_120",
            "swd_pixels_120_128p",  # min(n_fake 120, n_real 150, 4096) points per side
            "swd_digits_120_128p",
        ]
    )
    m = stored["metrics"]
    # stderr: one line per value, FD, KID and IS with their spread
    assert f"ganbench: fd_digits_120 = {m['fd_digits_120']:.4g} ± {m['fd_digits_120_std_5x24']:.2g} " \
           "(std over 5 subsets of 24)\n" in captured.err
    assert f"ganbench: is_digits_120 = {m['is_digits_120']:.4g} ± {m['is_digits_120_std_10x12']:.2g} " \
           "(std over 10 splits of 12)\n" in captured.err
    assert f"ganbench: density_digits_120 = {m['density_digits_120']:.4g}\n" in captured.err
    assert "_std_" not in captured.err
    assert stored["protocol"]["feature_sha256"] == load_feature_net("digits").sha256
    assert (stored["dataset"], stored["features"], stored["n_fake"], stored["n_real"], stored["resolution"]) == (
        "digits",
        "digits",
        120,
        150,
        16,
    )
    assert stored["protocol"]["reference_stats_protocol"]["n"] == 150


def test_evaluate_toy_reports_mode_metrics(tmp_path, capsys):
    dm = GANDataModule("ring8", batch_size=32, n_toy_samples=256)
    ckpt = make_ckpt(tmp_path, dm)
    assert evaluate.main(["--ckpt", str(ckpt), "--n-fake", "300", "--n-real", "300"]) == 0
    out = json.loads(capsys.readouterr().out)
    module = load_module(ckpt)
    fake = torch.cat(list(generate(module, 300, 250, 0, True)))
    mm = mode_metrics(fake, dm.mixture.centers, dm.mixture.std)
    assert out["metrics"]["modes_covered_300"] == mm["modes_covered"]
    assert out["metrics"]["kl_modes_300"] == pytest.approx(mm["kl_to_uniform"], rel=1e-9)
    assert out["protocol"]["w1_samples"] == 300 and "w1_exact_300" in out["metrics"]
    assert out["protocol"]["swd_samples"] == 300 and "swd_300_128p" in out["metrics"]  # every key names its count
    assert Path(out["written_to"]).name == "eval_toy_300.json"


def test_evaluate_unknown_features_is_one_line_error(digits_ckpt):
    with pytest.raises(GanbenchError, match=r"^ganbench evaluate: argument --features: invalid choice: 'vgg' "
                                            r"\(choose from '?inception'?, '?fmnist'?, '?digits'?\)$"):
        evaluate.main(["--ckpt", str(digits_ckpt), "--n-fake", "10", "--features", "vgg"])


@pytest.mark.parametrize(
    ("args", "size"),
    [
        (["--n", "16"], (4 * 18 + 2, 4 * 18 + 2)),  # 16 images of 16 px, 4 per row, 2 px padding
        (["--n", "12", "--interpolate", "6"], (6 * 18 + 2, 2 * 18 + 2)),
        (["--arithmetic", "--group-size", "3"], (4 * 18 + 2, 4 * 18 + 2)),
        (["--n", "9", "--truncation", "0.5", "--no-ema"], (3 * 18 + 2, 3 * 18 + 2)),
    ],
)
def test_sample_grids(digits_ckpt, tmp_path, capsys, args, size):
    out = tmp_path / "grid.png"
    assert sample.main(["--ckpt", str(digits_ckpt), "--out", str(out), *args]) == 0
    assert Image.open(out).size == size


def test_sample_class_on_unconditional_generator_is_refused(digits_ckpt, tmp_path):
    with pytest.raises(GanbenchError, match=r"^--class needs a conditional generator; this one has no classes$"):
        sample.main(["--ckpt", str(digits_ckpt), "--out", str(tmp_path / "g.png"), "--class", "3"])


def test_arithmetic_latents_are_mean_a_minus_mean_b_plus_mean_c():
    z = torch.arange(9 * 2, dtype=torch.float32).reshape(9, 2)
    lat, row = sample.arithmetic_latents(z, 3, noise=0.0)
    assert row == 4 and lat.shape == (16, 2)
    a, b, c = z[:3].mean(0), z[3:6].mean(0), z[6:9].mean(0)
    torch.testing.assert_close(lat[3], a, rtol=0, atol=0)
    torch.testing.assert_close(lat[12], a - b + c, rtol=0, atol=0)
    torch.testing.assert_close(lat[13:], (a - b + c).expand(3, 2), rtol=0, atol=0)


def test_datamodule_is_rebuilt_from_hyper_parameters_saved_by_lightning_cli(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save(
        {
            "ganbench": {"family": "sngan", "class_path": "ganbench.models.sngan.SNGAN"},
            "datamodule_hyper_parameters": {
                "dataset": "digits",
                "resolution": 12,
                "_instantiator": "cli",
                "_class_path": "ganbench.data.GANDataModule",
            }
        },
        path,
    )
    dm = evaluate.datamodule_for(path, None, None)
    assert (dm.dataset, dm.resolution, dm.shape) == ("digits", 12, (1, 12, 12))
    assert evaluate.datamodule_for(path, "ring8", None).dataset == "ring8"
