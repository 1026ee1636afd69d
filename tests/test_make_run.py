"""`make run`'s promise: the figure README quotes is the one measured end to end (docs/make_run.json,
written by scripts/time_make_run.py) on the CPU profile as it is now, and the feature net it ships is
the standard one."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ganbench import GanbenchError
from ganbench.metrics import features
from tests.conftest import needs_fmnist

ROOT = Path(__file__).resolve().parent.parent
MEASURED = json.loads((ROOT / "docs" / "make_run.json").read_text())


def minutes(seconds: float) -> str:
    from scripts.time_make_run import minutes as fmt

    return fmt(seconds)


def test_the_measurement_used_the_profile_as_it_is(tmp_path):
    """Any change of what the CPU profile on sngan.yaml resolves to makes the measured figure stale:
    measure again. The files as timed (kept in the record) and as they are now must resolve to the
    same configuration (the files may be written differently: the configs hold only their deltas)."""
    from tests.test_configs import resolved

    timed = []
    for name in ("base", "profile"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(MEASURED[name]))
        timed.append(str(path))
    assert resolved(*timed) == resolved("configs/sngan.yaml", "configs/profiles/sngan_cpu.yaml"), \
        "configs/sngan.yaml + configs/profiles/sngan_cpu.yaml resolve to other settings than were timed: run " \
        "python scripts/time_make_run.py"
    assert MEASURED["command"] == "ganbench run --profile auto --config configs/sngan.yaml"
    assert MEASURED["status"] == "completed" and MEASURED["g_steps"] == 2000


def test_readme_and_the_profile_quote_the_measured_figure():
    figure = minutes(MEASURED["wall_s"])
    assert MEASURED["wall_s"] <= 15 * 60
    for path in ("README.md", "configs/profiles/sngan_cpu.yaml", "ganbench/commands/run.py"):
        text = (ROOT / path).read_text()
        assert figure in text, f"{path} does not quote the measured {figure}"
        assert not re.search(r"about 10 minutes", text), path
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    assert f"**{figure}** in all ({MEASURED['wall_s']} s)" in bench


def test_shipped_feature_net_is_checked_and_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    path = features.shipped_weights("fmnist")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == features.SHIPPED_WEIGHTS["fmnist"]
    cached = features.install_shipped_weights("fmnist")
    assert cached == tmp_path / "cache" / "features" / path.name
    assert features.find_domain_weights("fmnist") == cached
    assert cached.read_bytes() == path.read_bytes()
    # an altered copy is refused with one line naming the file and both hashes
    assets = tmp_path / "pkg" / "assets"
    assets.mkdir(parents=True)
    bad = assets / path.name
    shutil.copyfile(path, bad)
    with open(bad, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(features, "__file__", str(tmp_path / "pkg" / "metrics" / "features.py"))
    expected = (rf"shipped feature weights {re.escape(str(bad))} have SHA-256 [0-9a-f]{{64}}, "
                rf"not {features.SHIPPED_WEIGHTS['fmnist']}: the file is altered")
    with pytest.raises(GanbenchError, match=expected):
        features.shipped_weights("fmnist")


@needs_fmnist
def test_shipped_feature_net_is_the_standard_one():
    """The shipped file is what `ganbench train-features --data fashion_mnist` saves (4 epochs, seed 0),
    and it classifies the Fashion-MNIST test set with the accuracy it records."""
    payload = torch.load(features.shipped_weights("fmnist"), map_location="cpu", weights_only=False)
    assert (payload["dataset"], payload["epochs"], payload["seed"]) == ("fashion_mnist", 4, 0)
    net = features.DomainCNN(**payload["config"])
    net.load_state_dict(payload["state_dict"])
    x, y = features.load_labelled("fashion_mnist", "test")
    assert features.evaluate_accuracy(net.eval(), x, y) == pytest.approx(payload["test_accuracy"], abs=1e-4)
    assert payload["test_accuracy"] >= 0.90
