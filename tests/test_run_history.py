"""A run directory is append-only history: crashes, resumes and bad input never lose what it holds."""

from __future__ import annotations

import csv
import json
import signal
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from ganbench import GanbenchError, find_user_error
from ganbench.cli import EXIT_USAGE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from kill_resume import fit_argv, interrupt, start_fit  # noqa: E402

from tests.tiny import CPU, NO_EXTRAS, RING8, SMALL, tiny_fit  # noqa: E402

TOY = [*RING8, *SMALL]
TINY = [*TOY, *CPU, *NO_EXTRAS, "--run.sample_every", "1000"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ errors and deletion
class CrashAt(L.Callback):
    """Raises ``kind`` after G iteration ``step``; creates (and swallows) an unrelated GanbenchError first,
    as a callback that tolerates a missing optional file does."""

    def __init__(self, step: int, kind: str = "runtime"):
        self.step, self.kind = step, kind
        try:
            raise GanbenchError("an unrelated, handled problem")
        except GanbenchError:
            pass

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            if self.kind == "runtime":
                raise RuntimeError(f"injected crash at G iteration {self.step}")
            raise GanbenchError(f"injected bad input at G iteration {self.step}")


def crash_at(step: int, kind: str) -> list[str]:
    return ["--trainer.callbacks+=tests.test_run_history.CrashAt", "--trainer.callbacks.step", str(step),
            "--trainer.callbacks.kind", kind]


@pytest.mark.parametrize("kind", ["runtime", "ganbench"])
def test_crash_after_a_checkpoint_keeps_the_directory_and_shows_the_real_error(tmp_path, capsys, kind):
    root = tmp_path / "run"
    args = ["--run.checkpoint_every", "1", *crash_at(3, kind)]
    if kind == "runtime":
        with pytest.raises(RuntimeError, match="^injected crash at G iteration 3$"):
            tiny_fit(root, "sngan", *args, steps=5, base=TINY, check=False)
    else:
        assert tiny_fit(root, "sngan", *args, steps=5, base=TINY, check=False).code == EXIT_USAGE
    err = capsys.readouterr().err
    # the user callback runs before the checkpoint callback: steps 1 and 2 were saved, not 3
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == \
        ["last.ckpt", "step_0000001.ckpt", "step_0000002.ckpt"]
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    summary = json.loads((root / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["g_steps"] == 3
    assert "unrelated" not in err and "unrelated" not in summary["error"]
    assert f"ganbench: the run directory {root} holds checkpoints and is kept" in err
    if kind == "ganbench":
        assert err.strip().splitlines()[-1] == "ganbench: error: injected bad input at G iteration 3"
        assert summary["error"] == "GanbenchError: injected bad input at G iteration 3"


def test_find_user_error_follows_causes_only():
    def wrapped():
        try:
            raise GanbenchError("inner")
        except GanbenchError as inner:
            raise ValueError("jsonargparse's wrapper") from inner

    with pytest.raises(ValueError) as info:
        wrapped()
    assert str(find_user_error(info.value)) == "inner"
    try:
        raise GanbenchError("replaced")
    except GanbenchError:
        suppressed = RuntimeError("new")
        suppressed.__suppress_context__ = True
        suppressed.__context__ = GanbenchError("replaced")
    assert find_user_error(suppressed) is None
    assert find_user_error(RuntimeError("plain")) is None


# ------------------------------------------------------------------------------ metrics.csv history
def test_metrics_csv_after_sigkill_and_resume_equals_the_uninterrupted_run(tmp_path):
    """Every G iteration logged, diagnostics every 2: the killed run logs rows past its last checkpoint,
    the resume drops them and continues, and the file ends byte-identical to the uninterrupted run's
    (same steps, same values: the run is deterministic). The first segment's config.yaml stays."""
    steps, every = 10, "2"
    args = ["--run.checkpoint_every", every, "--trainer.log_every_n_steps", "1", "--run.diagnostics_every", "2",
            *TOY]
    ref_root, run_root = tmp_path / "reference", tmp_path / "run"
    ref = start_fit(fit_argv("configs/sngan.yaml", ref_root, steps, *args), tmp_path / "reference.log")
    proc = start_fit(fit_argv("configs/sngan.yaml", run_root, steps, *args, pace=0.3), tmp_path / "killed.log")
    assert interrupt(proc, run_root, 4, signal.SIGKILL) == -signal.SIGKILL
    stopped = torch.load(run_root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    logged = (run_root / "metrics.csv").read_text().splitlines()
    # last.ckpt follows step_4.ckpt, so a kill between the two leaves it at step 2
    assert 2 <= stopped < steps and len(logged) - 1 > stopped  # rows past the checkpoint were written
    config = (run_root / "config.yaml").read_bytes()
    resumed = start_fit(fit_argv("configs/sngan.yaml", run_root, steps, *args, "--ckpt_path", "last"),
                        tmp_path / "resumed.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert ref.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    expected, got = read_csv(ref_root / "metrics.csv"), read_csv(run_root / "metrics.csv")
    # rows are keyed by G iteration; an evaluation is logged once, at the iteration it measured
    assert [int(r["step"]) for r in expected] == list(range(1, steps + 1))
    assert any(k.startswith("diag/") for k in expected[1])
    assert got == expected
    assert (run_root / "config.yaml").read_bytes() == config
    assert [p.name for p in (run_root / "resumes").iterdir()] == [f"config_step_{stopped:07d}.yaml"]
    summary = json.loads((run_root / "summary.json").read_text())
    assert (summary["status"], summary["g_steps"]) == ("completed", steps)


# ------------------------------------------------------------------------------ resume checks
@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A finished 4-step SNGAN run with step checkpoints at 2 and 4."""
    root = tmp_path_factory.mktemp("done") / "run"
    assert tiny_fit(root, "sngan", "--run.checkpoint_every", "2", steps=4, base=TINY, check=False).code == 0
    return root


def last_error(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ganbench")]


@pytest.mark.parametrize(("args", "message"), [
    (["--model.init_args.width", "8"], "model.width: 4 -> 8"),
    (["--data.batch_size", "16"], "data.batch_size: 8 -> 16"),
    (["--model.init_args.n_critic", "2"], "model.n_critic: 5 -> 2"),
    (["--data.dataset", "grid25"], "data.dataset: 'ring8' -> 'grid25'"),  # model.num_classes follows the data
    (["--model.init_args.g_optimizer.init_args.lr", "0.001"], "model.g_optimizer.init_args.lr: 0.0002 -> 0.001"),
])
def test_resume_with_changed_settings_is_one_line_and_touches_nothing(done, tmp_path, capsys, args, message):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(done, run)
    before = snapshot(run)
    capsys.readouterr()
    assert tiny_fit(run, "sngan", *args, "--ckpt_path", "last", steps=6, base=TINY, check=False).code == EXIT_USAGE
    last = run / "checkpoints" / "last.ckpt"
    assert last_error(capsys) == [
        f"ganbench: error: resume from {last} with settings that differ from the checkpoint's: {message}; resume "
        "with the run's config.yaml, or pass --run.allow_changed_config true to continue with the new settings"]
    assert snapshot(run) == before


def test_a_checkpoint_older_than_new_arguments_resumes(done, tmp_path, capsys):
    """A checkpoint written before an argument existed (its hyper-parameters lack it) resumes when the
    argument is at its default; set to another value, it is a change like any other."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done, run)
    for name in ("last.ckpt", "step_4.ckpt", "step_2.ckpt"):
        path = run / "checkpoints" / name
        if not path.exists():
            continue
        ckpt = torch.load(path, weights_only=False)
        for key in ("augment", "lecam_weight", "top_k"):
            ckpt["hyper_parameters"].pop(key)
        ckpt["datamodule_hyper_parameters"].pop("train_samples")
        torch.save(ckpt, path)
    capsys.readouterr()
    assert tiny_fit(run, "sngan", "--model.init_args.lecam_weight", "0.5", "--ckpt_path", "last", steps=6, base=TINY,
                    check=False).code == EXIT_USAGE
    assert "model.lecam_weight: '(unset)' -> 0.5" in capsys.readouterr().err
    assert tiny_fit(run, "sngan", "--ckpt_path", "last", steps=6, base=TINY, check=False).code == 0
    assert "changed settings" not in capsys.readouterr().err


def test_changed_width_cannot_be_forced(done, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done, run)
    before = snapshot(run)
    capsys.readouterr()
    code = tiny_fit(run, "sngan", "--model.init_args.width", "8", "--run.allow_changed_config", "true",
                    "--ckpt_path", "last", steps=6, base=TINY, check=False).code
    assert code == EXIT_USAGE
    err = last_error(capsys)
    assert len(err) == 1 and err[0].startswith(
        f"ganbench: error: checkpoint {run / 'checkpoints' / 'last.ckpt'} cannot be loaded into the configured "
        "model, even with --run.allow_changed_config: discriminator.")
    assert snapshot(run) == before


def test_safe_and_allowed_changes_resume(done, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done, run)
    config = (run / "config.yaml").read_bytes()
    # max_steps up and intervals are always allowed; an optimizer setting with --run.allow_changed_config
    assert tiny_fit(run, "sngan", "--run.checkpoint_every", "3", "--model.init_args.d_optimizer.init_args.lr", "0.001",
               "--run.allow_changed_config", "true", "--ckpt_path", "last", steps=6, base=TINY, check=False).code == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    # the new D learning rate is in effect (torch would restore the checkpoint's 2e-4), G's is unchanged
    assert [g["lr"] for s in ckpt["optimizer_states"] for g in s["param_groups"]] == [2e-4, 1e-3]
    assert (run / "config.yaml").read_bytes() == config
    assert sorted(p.name for p in (run / "resumes").iterdir()) == ["config_step_0000004.yaml"]
    assert "lr: 0.001" in (run / "resumes" / "config_step_0000004.yaml").read_text()
    summary = json.loads((run / "summary.json").read_text())
    segments = [(s["from_step"], s["to_step"], s["status"]) for s in summary["segments"]]
    assert segments == [(0, 4, "completed"), (4, 6, "completed")] and summary["g_steps"] == 6
    assert summary["wall_s"] == round(sum(s["wall_s"] for s in summary["segments"]), 3)


@pytest.mark.parametrize(("args", "message"), [
    (["--ckpt_path", "last"], "trainer.max_steps=3 is below G iteration 4 of checkpoint {last}; "
                              "give --trainer.max_steps >= 4 to continue the run"),
    ([], "trainer.default_root_dir='{run}' already holds checkpoints (last.ckpt, step_0000002.ckpt, "
         "step_0000004.ckpt); resume with --ckpt_path last, or choose a new directory"),
    (["--ckpt_path", "{run}"], "ckpt_path='{run}' is a directory; give a checkpoint file "
                               "(e.g. {run}/checkpoints/last.ckpt) or --ckpt_path last"),
])
def test_resume_refusals_leave_the_directory_as_it_was(done, capsys, args, message):
    before = snapshot(done)
    fill = {"{run}": str(done), "{last}": str(done / "checkpoints" / "last.ckpt")}
    args = [fill.get(a, a) for a in args]
    capsys.readouterr()
    assert tiny_fit(done, "sngan", *args, steps=3, base=TINY, check=False).code == EXIT_USAGE
    for key, value in fill.items():
        message = message.replace(key, value)
    assert last_error(capsys) == [f"ganbench: error: {message}"]
    assert snapshot(done) == before


def test_last_missing_resumes_from_the_newest_step_checkpoint(done, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done, run)
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "checkpoints" / "step_0000004.ckpt").write_bytes(b"cut")  # the newest one is damaged
    capsys.readouterr()
    assert tiny_fit(run, "sngan", "--run.checkpoint_every", "2", "--ckpt_path", "last", steps=6, base=TINY,
                    check=False).code == 0
    good = run / "checkpoints" / "step_0000002.ckpt"
    assert last_error(capsys) == [f"ganbench: {run / 'checkpoints' / 'last.ckpt'} is missing; resuming from the "
                                  f"newest intact checkpoint {good}"]
    assert sorted(p.name for p in (run / "resumes").iterdir()) == ["config_step_0000002.yaml"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6 and ckpt["ganbench"]["d_steps"] == 30


# ------------------------------------------------------------------------------ divergence
def test_diverged_run_keeps_a_finite_last_checkpoint(tmp_path, capsys):
    """lr 1e10: the weights are non-finite after a few G iterations, before any loss is. No checkpoint with NaN/inf is
    written; the newest one before the divergence is kept as last_finite.ckpt and named in summary.json."""
    root = tmp_path / "run"
    lr = ["--model.init_args.g_optimizer.init_args.lr", "1e10", "--model.init_args.d_optimizer.init_args.lr", "1e10",
          "--model.init_args.divergence_threshold", ".inf"]  # only NaN/inf count: the weights get there first
    capsys.readouterr()
    assert tiny_fit(root, "sngan", *lr, "--run.checkpoint_every", "1", steps=40, base=TINY, check=False).code == 3
    summary = json.loads((root / "summary.json").read_text())
    div = summary["divergence"]
    last_finite = root / "checkpoints" / "last_finite.ckpt"
    assert summary["status"] == "diverged" and div["last_finite"] == str(last_finite)
    assert div["step"] < 40 and div["reason"].startswith("non-finite weights (")  # seen at a checkpoint
    ckpts = sorted((root / "checkpoints").glob("step_*.ckpt"))
    assert [p.name for p in ckpts] == [f"step_{i:07d}.ckpt" for i in range(1, div["step"])]
    for path in [*ckpts, last_finite, root / "checkpoints" / "last.ckpt"]:
        state = torch.load(path, weights_only=False)
        tensors = [v for v in state["state_dict"].values() if v.is_floating_point()]
        tensors += [v for s in state["optimizer_states"] for p in s["state"].values() for v in p.values()
                    if torch.is_tensor(v) and v.is_floating_point()]
        assert all(torch.isfinite(v).all() for v in tensors), path
    assert torch.load(last_finite, weights_only=False)["global_step"] == div["step"] - 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"ganbench: run diverged at G iteration {div['step']}: {div['reason']}; last finite checkpoint: {last_finite}")


# ------------------------------------------------------------------------------ file system
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (skipped where mounting is not permitted)."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_one_line_and_keeps_the_last_good_checkpoint(small_disk, capsys):
    from ganbench.reliability import newest_intact_checkpoint

    root = small_disk / "run"
    capsys.readouterr()
    assert tiny_fit(root, "sngan", "--run.checkpoint_every", "1", steps=500, base=TINY, check=False).code == EXIT_USAGE
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ganbench")]
    assert err[-1].startswith("ganbench: error: cannot write ") and "No space left on device" in err[-1], err
    assert err[-1].endswith("are kept"), err
    assert err[:-1] == [f"ganbench: the run directory {root} holds checkpoints and is kept; resume it with "
                        f"--trainer.default_root_dir {root} --ckpt_path last"]
    folder = root / "checkpoints"
    assert not list(folder.glob(".*.tmp-*"))
    steps = sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.ckpt"))
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert newest_intact_checkpoint(folder) is not None
    last = torch.load(folder / "last.ckpt", weights_only=False)  # complete: the previous one survived
    assert last["global_step"] in (steps[-1], steps[-1] - 1)


# ------------------------------------------------------------------------------ every data set
def _tiny_idx(folder: Path) -> None:
    import gzip

    folder.mkdir()
    images = b"\x00\x00\x08\x03" + (16).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(range(256)) * 49
    labels = b"\x00\x00\x08\x01" + (16).to_bytes(4, "big") + bytes(i % 10 for i in range(16))
    for split in ("train", "t10k"):
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images, mtime=0))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels, mtime=0))


def _tiny_folder(folder: Path) -> None:
    from PIL import Image

    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (12, 10), (30 * i, 255 - 30 * i, 7 * i)).save(folder / f"x{i}.png")


DATA = {"ring8": [], "grid25": [], "swissroll": [], "digits": ["--data.resolution", "8"],
        "mnist": ["--data.resolution", "8"], "imagefolder": ["--data.resolution", "8"],
        "fashion_mnist": ["--data.resolution", "8"]}


@pytest.mark.parametrize("dataset", sorted(DATA))
def test_diagnostics_and_metrics_run_on_every_data_set(tmp_path, dataset):
    """Two G iterations with diagnostics, metrics and sample grids at every step (swissroll used to crash
    Diagnostics, which read a Gaussian mixture's centres)."""
    args = ["--data.dataset", dataset, *DATA[dataset], "--data.n_toy_samples", "256"]
    if dataset == "mnist":
        _tiny_idx(tmp_path / "mnist")
        args += ["--data.root", str(tmp_path / "mnist"), "--data.download", "false"]
    elif dataset == "imagefolder":
        _tiny_folder(tmp_path / "images")
        args += ["--data.root", str(tmp_path / "images")]
    elif dataset == "fashion_mnist":
        from ganbench.data import sources

        if sources.find_idx("fashion_mnist", None)[0] is None:
            pytest.skip("no Fashion-MNIST files on this machine")
        args += ["--data.download", "false"]
    root = tmp_path / "run"
    code = tiny_fit(root, "sngan", *args, "--run.diagnostics_every", "1", "--run.metrics_every", "1",
                    "--run.image_features", "none", "--run.sample_every", "1", "--trainer.log_every_n_steps", "1",
                    "--data.batch_size", "4", "--model.init_args.n_critic", "1", steps=2, base=TINY, check=False).code
    assert code == 0
    rows = [r for r in read_csv(root / "metrics.csv") if r.get("diag/grad_norm_g")]  # rows keyed by G iteration
    assert [r["step"] for r in rows] == ["1", "2"]
    assert all(float(r["diag/grad_norm_d"]) > 0 for r in rows)
    assert all(bool(r.get("diag/collapse")) == (dataset in ("ring8", "grid25")) for r in rows)
    assert sorted(p.name for p in (root / "samples").glob("step_*.png")) == ["step_0000001.png", "step_0000002.png"]


def test_read_only_checkpoints_on_resume_is_one_line(done, tmp_path, capsys):
    """A read-only checkpoints/ (a read-only bind mount: root ignores file modes) is refused before the
    run directory is touched."""
    import shutil
    import subprocess

    run = tmp_path / "run"
    shutil.copytree(done, run)
    folder = run / "checkpoints"
    if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
        pytest.skip("bind mounts are not permitted here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode:
            pytest.skip("read-only remounts are not permitted here")
        before = snapshot(run)
        capsys.readouterr()
        assert tiny_fit(run, "sngan", "--ckpt_path", "last", steps=6, base=TINY, check=False).code == EXIT_USAGE
        assert last_error(capsys) == [
            f"ganbench: error: {folder} is not writable; the run cannot save its checkpoints there (make it "
            "writable, or resume into another --trainer.default_root_dir)"]
        assert snapshot(run) == before
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
