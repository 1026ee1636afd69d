"""Reliability: bit-identical resume after SIGKILL/SIGTERM, atomic checkpoints, one-line errors.

The kill tests run real ``ganbench fit`` subprocesses (scripts/kill_resume.py), kill them from here once
a checkpoint (SIGKILL) or the pace marker (SIGTERM) passed a seeded random step, resume with
``--ckpt_path last`` and compare every tensor of G, D, EMA and both optimizers with an uninterrupted run.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import signal
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from ganbench.cli import EXIT_USAGE, main
from ganbench.models import FAMILIES
from ganbench.reliability import EXIT_INTERRUPTED, atomic_torch_save, family_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from kill_resume import compare_checkpoints, fit_argv, interrupt, start_fit  # noqa: E402

from tests.tiny import NO_EXTRAS, RING8, SMALL, tiny_fit  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
TOY = [*RING8, *SMALL]
CONFIGS = {"sngan": "configs/sngan.yaml", "wgan_gp": "configs/wgan_gp.yaml", "began": "configs/began.yaml"}
STEPS = 14  # SNGAN/WGAN-GP: 12 G iterations per epoch of 512 points, so the resumed runs cross an epoch


def kill_and_resume(tmp_path: Path, family: str, sig: signal.Signals) -> tuple[int, Path]:
    """Reference fit and interrupted fit side by side, then the resume; returns (exit code of the
    interrupted fit, its run directory)."""
    assert family in FAMILIES
    at = random.Random(f"{family}-{sig.name}").randint(2, 7)
    every = "1" if sig == signal.SIGKILL else "100000"  # SIGTERM: last.ckpt comes from the SIGTERM save alone
    args = [*TOY, "--run.checkpoint_every", every]
    ref_root, run_root = tmp_path / "reference", tmp_path / "run"
    ref = start_fit(fit_argv(CONFIGS[family], ref_root, STEPS, *args), tmp_path / "reference.log")
    proc = start_fit(fit_argv(CONFIGS[family], run_root, STEPS, *args), tmp_path / "killed.log")
    code = interrupt(proc, run_root, at, sig)
    stopped = torch.load(run_root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert at - 1 <= stopped < STEPS, (at, stopped)
    resumed = start_fit(fit_argv(CONFIGS[family], run_root, STEPS, *args, "--ckpt_path", "last"),
                        tmp_path / "resumed.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert ref.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    a, b = ref_root / "checkpoints" / "last.ckpt", run_root / "checkpoints" / "last.ckpt"
    assert torch.load(b, weights_only=False)["global_step"] == STEPS
    assert compare_checkpoints(a, b) == []
    return code, run_root


CASES = [pytest.param(f, s, id=f"{f}-{s.name}") for s in (signal.SIGKILL, signal.SIGTERM)
         for f in ("sngan", "wgan_gp", "began")]


@pytest.mark.parametrize(("family", "sig"), CASES)
def test_killed_run_resumes_bit_identical(tmp_path, family, sig):
    code, root = kill_and_resume(tmp_path, family, sig)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        assert not list((root / "checkpoints").glob(".*.tmp-*"))  # the resume removed a killed writer's file
    else:
        assert code == EXIT_INTERRUPTED
        assert "interrupted by SIGTERM" in (tmp_path / "killed.log").read_text()


def test_compare_checkpoints_sees_a_one_ulp_change(tmp_path):
    """The comparison behind the kill tests is exact: one parameter moved by one ulp is reported."""
    from ganbench.models import SNGAN

    m = SNGAN(data_shape=(2,), width=4, latent_dim=2)
    sd = m.state_dict()
    atomic_torch_save({"state_dict": sd, "global_step": 1}, tmp_path / "a.ckpt")
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.numel())
    sd = {**sd, name: sd[name].clone()}
    sd[name].view(-1)[0] = torch.nextafter(sd[name].view(-1)[0], torch.tensor(float("inf")))
    atomic_torch_save({"state_dict": sd, "global_step": 1}, tmp_path / "b.ckpt")
    assert compare_checkpoints(tmp_path / "a.ckpt", tmp_path / "b.ckpt") == [f"state_dict.{name}"]
    assert compare_checkpoints(tmp_path / "a.ckpt", tmp_path / "a.ckpt") == []


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"step": 2, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def sigterm_at(step: int) -> list[str]:
    return ["--trainer.callbacks+=tests.test_reliability.SigtermAt", "--trainer.callbacks.step", str(step)]


class SigtermAt(L.Callback):
    """Sends SIGTERM to its own process after G iteration ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


TINY = [*TOY, "--trainer.accelerator", "cpu", *NO_EXTRAS, "--run.sample_every", "1000", "--trainer.enable_progress_bar",
        "false"]


def test_sigterm_writes_last_checkpoint_and_interrupted_summary(tmp_path, capsys):
    root = tmp_path / "run"
    every = ["--run.checkpoint_every", "1000"]
    code = tiny_fit(root, "sngan", *every, *sigterm_at(3), steps=8, base=TINY, check=False).code
    assert code == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "ganbench: interrupted by SIGTERM; last.ckpt and summary.json are written, resume with --ckpt_path last")
    summary = json.loads((root / "summary.json").read_text())
    assert (summary["status"], summary["g_steps"]) == ("interrupted", 3)
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["last.ckpt"]
    ckpt = torch.load(root / "checkpoints" / "last.ckpt")  # weights_only: RNG states are tensors and ints
    assert ckpt["global_step"] == 3 and ckpt["ganbench"]["d_steps"] == 15
    tiny_fit(root, "sngan", *every, "--ckpt_path", "last", steps=5, base=TINY)
    summary = json.loads((root / "summary.json").read_text())
    assert (summary["status"], summary["g_steps"]) == ("completed", 5)


def test_truncated_last_checkpoint_names_the_newest_intact_one(tmp_path, capsys):
    root = tmp_path / "run"
    every = ["--run.checkpoint_every", "1"]
    tiny_fit(root, "sngan", *every, base=TINY)
    last = root / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (root / "checkpoints" / "step_0000003.ckpt").write_bytes(b"")
    capsys.readouterr()
    assert tiny_fit(root, "sngan", *every, "--ckpt_path", "last", steps=4, base=TINY, check=False).code == EXIT_USAGE
    good = root / "checkpoints" / "step_0000002.ckpt"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"ganbench: error: checkpoint {last} is truncated or corrupt (BadZipFile: File is not a zip file); "
        f"the newest intact checkpoint is {good}; resume with --ckpt_path {good}"]
    tiny_fit(root, "sngan", *every, "--ckpt_path", str(good), steps=4, base=TINY)
    assert torch.load(last, weights_only=False)["global_step"] == 4


def doc_rows() -> list[tuple[str, str, str]]:
    rows = []
    in_table = False
    for line in DOC.read_text().splitlines():
        if line.startswith("| input | arguments | message |"):
            in_table = True
        elif in_table and line.startswith("| ") and not line.startswith("|---"):
            name, args, message = (c.strip().strip("`") for c in line.strip("|").split(" | "))
            rows.append((name, args, message))
        elif in_table and not line.startswith("|"):
            break
    return rows


ROWS = doc_rows()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "bad.yaml").write_text("model:\n  class_path: [oops\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "nosuch.yaml").write_text("model:\n  class_path: ganbench.models.NoSuchGAN\n")
    (tmp / "file").write_text("")
    (tmp / "broken").mkdir()
    for i in range(1, 7):
        (tmp / "broken" / f"x{i}.png").write_text("not an image")
    fm = tmp / "fmnist"
    fm.mkdir()
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name in names:  # valid gzip headers, the training images cut short
        with gzip.open(fm / f"{name}.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x03" + bytes(2000))
    data = (fm / f"{names[0]}.gz").read_bytes()
    (fm / f"{names[0]}.gz").write_bytes(data[: len(data) // 2])
    (tmp / "empty.yaml").write_text("")
    (tmp / "trainer_list.yaml").write_text("trainer: [1, 2]\n")
    (tmp / "data5.yaml").write_text("data: 5\n")
    pixels = bytes(random.Random(0).randrange(256) for _ in range(2 * 784))
    broken = {  # idx sets whose training part is damaged in one way each
        "flip": (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + pixels, bytes([0, 1])),
        "shape": (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (14).to_bytes(4, "big") + (56).to_bytes(4, "big")
                  + pixels, bytes([0, 1])),
        "labels": (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + pixels,
                   bytes([3, 250])),
        "partial": (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + pixels, bytes([0, 1])),
    }
    for kind, (images, labels) in broken.items():
        folder = tmp / f"idx_{kind}"
        folder.mkdir()
        for name, content in zip(names, [images, b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + labels] * 2):
            (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
    flip = tmp / "idx_flip" / f"{names[0]}.gz"
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flip.write_bytes(bytes(data))
    (tmp / "idx_partial" / f"{names[3]}.gz").unlink()
    for run, steps in (("sngan", 2), ("cut", 2)):
        tiny_fit(tmp / run, "sngan", "--run.checkpoint_every", "1", steps=steps, base=TINY)
    last = tmp / "cut" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    tiny_fit(tmp / "img", "sngan", "--data.dataset", "digits", "--data.resolution", "8", steps=1, base=TINY)
    from ganbench.metrics.features import DomainCNN, save_domain_net

    save_domain_net(DomainCNN(1, 8, 10), "digits", accuracy=0.0, out=tmp / "digits.pt")
    return tmp


def test_doc_table_covers_the_inputs():
    names = {r[0] for r in ROWS}
    assert len(ROWS) == 55 and len(names) == len(ROWS)
    for needed in ("malformed YAML", "unknown key", "unknown family", "unknown normalization", "unknown loss",
                   "batch norm in D with a gradient penalty", "truncated dataset file", "unreadable image",
                   "unwritable output directory", "unreachable sweep storage", "checkpoint of another family"):
        assert needed in names


@pytest.mark.parametrize(("name", "args", "message"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gives_one_line(scratch, tmp_path, capsys, name, args, message):
    run = tmp_path / "run"
    fill = {"{tmp}": str(scratch), "{run}": str(run), "{families}": ", ".join(sorted(family_names()))}
    argv = re.sub("|".join(map(re.escape, fill)), lambda m: fill[m.group(0)], args).split()
    if argv[0] == "fit":
        if "--trainer.default_root_dir" not in argv:
            argv += ["--trainer.default_root_dir", str(run)]
        # no image metrics: without a trained feature net they print a notice of their own
        argv += ["--run.wandb", "false", "--trainer.max_steps", "1", "--run.metrics_every", "0"]
    capsys.readouterr()
    assert main(argv) == EXIT_USAGE
    expected = re.sub("|".join(map(re.escape, fill)), lambda m: fill[m.group(0)], message)
    err = capsys.readouterr().err
    # progress bars and Lightning's notices may precede it; the error itself is one line, no traceback
    assert [line for line in err.splitlines() if line.startswith("ganbench")] == [expected]
    assert "Traceback" not in err
    assert not run.exists()
