"""Nothing computed changes unless it is meant to: every shipped config on every executor (eager,
direct, emulated graph, population of 3) ends a tiny fit with exactly the parameters, optimizer
state, random streams and metrics.csv recorded in tests/golden/ (see scripts/record_golden.py and
docs/golden.md). A change meant to alter results regenerates the files and says why in its commit."""

import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import needs_fmnist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import record_golden as golden  # noqa: E402

#: in the default suite: one config per executor, and one refusal; the rest run with -m slow
DEFAULT_SUITE = {("began", "eager"), ("sngan_cpu", "direct"), ("wgan_gp", "graph"), ("sngan", "population3"),
                 ("ebgan", "population3")}


def marked(config: str, executor: str):
    marks = [] if (config, executor) in DEFAULT_SUITE else [pytest.mark.slow]
    if golden.needs_fashion_mnist(config):
        marks.append(needs_fmnist)
    return pytest.param(config, executor, marks=marks, id=f"{config}-{executor}")


@pytest.mark.parametrize("config, executor", [marked(c, e) for c, e in golden.cases()])
def test_fit_equals_its_golden_file(config, executor):
    expected = golden.load(config, executor)
    if expected["platform"] != golden.platform_key():
        pytest.skip(f"recorded on {expected['platform']}, this is {golden.platform_key()}: compare on that platform, "
                    "or record the base commit's files here first (docs/golden.md)")
    why = golden.first_difference(expected, golden.run_case(config, executor))
    assert why is None, f"{why} (a change meant to alter results: python scripts/record_golden.py {config})"


def test_every_case_has_its_file_and_nothing_else_is_there():
    stored = {p.name for p in golden.GOLDEN.glob("*.pt")}
    assert stored == {golden.golden_path(c, e).name for c, e in golden.cases()}
    assert len(stored) == 4 * 23  # 22 files in configs/ and the CPU profile


def test_a_changed_bit_value_or_refusal_is_found():
    """The comparison sees one ulp in one tensor, a changed metrics.csv entry and a changed refusal."""
    record = {"config": "c", "executor": "e", "steps": 5, "seed": 0, "refused": None, "notices": [],
              "tensors": {"a": torch.tensor([1.0, float("nan"), -0.0]), "b": torch.arange(3)},
              "values": {"global_step": 5}, "metrics": [["step", "train/d_loss"], ["1", "0.5"]]}
    stored = golden.summary(record)
    assert golden.first_difference(stored, record) is None
    same = {**record, "tensors": {"a": torch.tensor([1.0, float("nan"), 0.0]), "b": torch.arange(3)}}
    assert golden.first_difference(stored, same) is None  # NaN in the same place, −0.0 as 0.0: torch.equal
    ulp = {**record, "tensors": {**record["tensors"], "a": torch.tensor([1.0 + 2 ** -23, float("nan"), 0.0])}}
    assert golden.first_difference(stored, ulp) == (
        "c/e: tensor a differs (sum 1.0 -> 1.0000001192092896, sum of |x| 1.0 -> 1.0000001192092896)")
    assert golden.first_difference(record, ulp).endswith(", max |difference| 1.19e-07)")  # whole tensors
    metrics = {**record, "metrics": [["step", "train/d_loss"], ["1", "0.50000006"]]}
    assert golden.first_difference(stored, metrics) == (
        "c/e: metrics.csv row 1 column train/d_loss was 0.5, now 0.50000006")
    refused = {**record, "refused": "ganbench: error: model.population=3: ..."}
    assert golden.first_difference(stored, refused) == (
        "c/e: refused was None, now 'ganbench: error: model.population=3: ...'")
