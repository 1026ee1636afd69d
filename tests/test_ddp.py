"""DDP on CPU (2 processes, gloo) trains exactly what one process trains on the doubled batch.

Lightning's ``ddp`` strategy re-runs the launching command for every extra rank, which under
pytest would re-run pytest, so every DDP run here is a subprocess: scripts/ddp_equivalence.py for
the equivalence (see its docstring for why the parameters must agree) and ``python -m ganbench.cli``
for a whole ``fit``. The reference and the DDP run of the equivalence start together (they use
1 + 2 processes on the shared cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ddp_equivalence.py"
sys.path.insert(0, str(ROOT / "scripts"))

from ddp_equivalence import CASES, LATENT_DIM, N_CRITIC, SEED  # noqa: E402

from ganbench.data.loader import mix_seed  # noqa: E402
from tests.tiny import CPU, RING8_2000, SMALL, tiny_argv  # noqa: E402

STEPS = 2
#: the bound of the brief; the observed difference is ~2e-7 (float32 summation order)
TOL = 1e-5


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


def _check(proc: subprocess.Popen, what: str) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{what} failed:\n{out[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One single-process run with batch 8 and one 2-process DDP run with batch 4 per rank."""
    base = tmp_path_factory.mktemp("ddp_equivalence")
    dirs = {"ref": base / "ref", "ddp": base / "ddp"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(SCRIPT), "--devices", str(devices), "--batch-size", str(batch),
             "--steps", str(STEPS), "--out", str(dirs[name])],
            cwd=base, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, devices, batch in (("ref", 1, 8), ("ddp", 2, 4))
    }
    for name, proc in procs.items():
        _check(proc, f"ddp_equivalence.py ({name})")
    return dirs


def _load(runs: dict[str, Path], case: str) -> tuple[dict, dict, dict]:
    missing = runs["ref"] / f"{case}.missing"
    if missing.exists():
        pytest.skip(f"case {case}: {missing.read_text().strip()}")
    return tuple(torch.load(p, weights_only=False) for p in (  # type: ignore[return-value]
        runs["ref"] / f"{case}-rank0.pt", runs["ddp"] / f"{case}-rank0.pt", runs["ddp"] / f"{case}-rank1.pt"))


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_equals_one_process_with_the_doubled_batch(runs, case):
    """2 ranks × batch 4 == 1 process × batch 8 after 2 G iterations (4 D + 2 G SGD steps): every
    parameter and buffer of G, D and EMA agrees to 1e-5, while training moved G and D by > 1e-3."""
    ref, r0, r1 = _load(runs, case)
    assert (ref["world"], r0["world"], r1["world"]) == (1, 2, 2)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert ref["g_steps"] == r0["g_steps"] == r1["g_steps"] == STEPS
    assert ref["d_steps"] == r0["d_steps"] == r1["d_steps"] == STEPS * N_CRITIC
    assert ref["state"].keys() == r0["state"].keys() == r1["state"].keys()
    for key, value in r0["state"].items():  # the ranks hold the very same model
        assert torch.equal(value, r1["state"][key]), key
    for key, value in ref["state"].items():
        if value.is_floating_point():
            assert torch.allclose(r0["state"][key], value, rtol=0, atol=TOL), (
                key, (r0["state"][key] - value).abs().max().item())
        else:
            assert torch.equal(r0["state"][key], value), key
    if case == "began":  # k_t (eq. 4) is driven by the energies averaged over ranks: k_1 > 0 entered step 2
        assert r0["began_k"] == r1["began_k"] and r0["began_k"] > 1e-6
        assert abs(r0["began_k"] - ref["began_k"]) <= 1e-6 * r0["began_k"]
    for player in ("generator.", "discriminator."):
        moved = max((ref["state"][k] - ref["initial"][k]).abs().max().item()
                    for k in ref["state"] if k.startswith(player) and ref["state"][k].is_floating_point())
        assert moved > 100 * TOL, (player, moved)


def test_spectral_norm_vectors_agree_across_ranks_and_with_one_process(runs):
    """The power-iteration vectors u, v of every spectrally normalized layer are buffers: after
    training they are bit-identical on both ranks and equal (1e-5) to the single-process ones."""
    ref, r0, r1 = _load(runs, "sngan")
    keys = [k for k in ref["state"] if k.endswith(("._u", "._v"))]
    assert len(keys) == 2 * sum(1 for k in ref["state"] if k.endswith("parametrizations.weight.original"))
    assert len(keys) >= 8
    for key in keys:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
        assert torch.allclose(r0["state"][key], ref["state"][key], rtol=0, atol=TOL), key
        if ref["state"][key].numel() > 1:  # the power iteration ran (a 1-D u of a 1-output head stays ±1)
            assert not torch.equal(ref["state"][key], ref["initial"][key]), key


def test_each_rank_draws_its_own_reproducible_latents(runs):
    """After ``on_fit_start`` rank r's torch stream is seeded with ``mix_seed(seed, r)``: its first
    latents are exactly those of that seed, and the two ranks' latents differ."""
    _, r0, r1 = _load(runs, "sngan")
    for rank, run in ((0, r0), (1, r1)):
        expected = torch.randn(4, LATENT_DIM, generator=torch.Generator().manual_seed(mix_seed(SEED, rank)))
        assert torch.equal(run["probe"], expected), rank
    assert not torch.allclose(r0["probe"], r1["probe"])


def test_ddp_fit_writes_one_summary_one_grid_per_interval_one_wandb_run(tmp_path):
    """``ganbench fit`` with configs/trainer/ddp.yaml on 2 CPU processes: 4 G iterations, a grid
    every 2; rank 0 alone writes, so the run directory holds exactly one of each output and
    nothing else under the working directory was created by rank 1."""
    root = tmp_path / "run"
    # the trainer fragment goes on top of the family config, then the two processes
    args = tiny_argv(root, str(ROOT / "configs" / "sngan.yaml"), "--config", str(ROOT / "configs/trainer/ddp.yaml"),
                     "--trainer.devices", "2", *CPU, *SMALL, *RING8_2000, "--run.sample_every", "2",
                     "--run.checkpoint_every", "2", "--trainer.log_every_n_steps", "1", steps=4)
    proc = subprocess.run([sys.executable, "-m", "ganbench.cli", *args], cwd=tmp_path, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "Starting with 2 processes" in proc.stdout
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("summary.json")) == [Path("run/summary.json")]
    summary = json.loads((root / "summary.json").read_text())
    assert (summary["status"], summary["g_steps"], summary["family"]) == ("completed", 4, "sngan")
    grids = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("step_*.png"))
    assert grids == ["run/samples/step_0000002.png", "run/samples/step_0000004.png"]
    runs = list(tmp_path.rglob("run-*.wandb"))
    assert len(runs) == 1 and runs[0].is_relative_to(root / "wandb"), runs
    from tests.wandb_log import read_records

    history = [{i.key or "/".join(i.nested_key) for i in r.history.item}
               for r in read_records(runs[0]) if r.HasField("history")]
    assert sum("samples/_type" in keys for keys in history) == 2  # one image per grid
    assert any("train/d_loss" in keys for keys in history)
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    assert cfg["trainer"]["strategy"]["class_path"] == "lightning.pytorch.strategies.DDPStrategy"
    assert cfg["trainer"]["strategy"]["init_args"]["find_unused_parameters"] is True
    assert str(cfg["trainer"]["devices"]) == "2"  # devices is typed list | str | int
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    assert (ckpt["global_step"], ckpt["ganbench"]["d_steps"]) == (4, 20)


def test_every_family_trains_under_ddp_with_identical_ranks(tmp_path):
    """Every registered family with its own defaults (BatchNorm, paper optimizers, n_critic, unrolled
    D steps, weight clipping, penalties) runs 2 G iterations on 2 gloo processes; afterwards both
    ranks hold bit-identical, finite parameters (BatchNorm running statistics are rank-local between
    broadcasts, so only parameters are compared)."""
    from ganbench.models import FAMILIES, GANModule

    proc = subprocess.run([sys.executable, str(SCRIPT), "--devices", "2", "--batch-size", "4", "--steps", str(STEPS),
                           "--cases", "families", "--out", str(tmp_path)], cwd=tmp_path, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    skipped = {p.name.removeprefix("family-").removesuffix(".skipped") for p in tmp_path.glob("*.skipped")}
    # only image-to-image families (those showing input|output|target grids) may lack a latent G
    image_to_image = {f for f, cls in FAMILIES.items() if cls.grid_images is not GANModule.grid_images}
    assert skipped <= image_to_image, skipped
    assert {"sngan", "wgan_gp", "dcgan", "began", "ebgan", "unrolled", "dragan"} <= set(FAMILIES) - skipped
    for family in set(FAMILIES) - skipped:
        r0, r1 = (torch.load(tmp_path / f"family-{family}-rank{r}.pt", weights_only=False) for r in (0, 1))
        assert r0["g_steps"] == r1["g_steps"] == STEPS, family
        assert r0["d_steps"] == r1["d_steps"] == STEPS * r0["n_critic"], family
        assert r0["parameters"], family
        for key in r0["parameters"]:
            assert torch.equal(r0["state"][key], r1["state"][key]), (family, key)
            assert torch.isfinite(r0["state"][key]).all(), (family, key)
