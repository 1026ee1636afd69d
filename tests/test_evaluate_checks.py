"""`ganbench evaluate`: arguments checked before any model runs, labels that never overstate the
protocol, strict JSON, and progress that shows in a log file."""

from __future__ import annotations

import io
import json

import pytest

from ganbench import GanbenchError
from ganbench.commands import evaluate
from ganbench.metrics.features import INCEPTION_SHA256, FeatureNet
from ganbench.metrics.image import check_sample_counts, metric_keys, metric_protocol
from ganbench.progress import progress
from tests import test_metrics_commands

digits_ckpt = test_metrics_commands.digits_ckpt  # the fixture: a tiny digits SNGAN and a digits feature net


@pytest.mark.parametrize(("args", "message"), [
    (["--n-fake", "3", "--metrics", "fd", "pr"], "--n-fake=3 is too small for metric pr: it needs >= 4"),
    (["--n-fake", "9"], "--n-fake=9 is too small for metric is: it needs >= 10"),
    (["--n-real", "0"], "--n-real=0 is invalid; it must be >= 1"),
    (["--feature-weights", "/nonexistent.pt"], "feature weights file not found: /nonexistent.pt"),
    (["--n-real", "100000"], "--n-real=100000 is more than the 1617 images of the train split of digits"),
])
def test_image_arguments_fail_before_a_model_is_built(digits_ckpt, monkeypatch, args, message):
    """The default --n-fake 10000 would take minutes to sample: every refusal comes before that."""
    def never(*_a, **_k):
        raise AssertionError("a model was built or sampled before the arguments were checked")

    monkeypatch.setattr("ganbench.models.load_module", never)
    monkeypatch.setattr(evaluate, "generate", never)
    with pytest.raises(GanbenchError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        evaluate.main(["--ckpt", str(digits_ckpt), *args])


def test_sample_minimums_follow_each_metric():
    check_sample_counts(["fd", "kid", "swd"], 2, 2)
    check_sample_counts(["is"], 10, 1)  # IS reads no real samples
    check_sample_counts(["pr"], 4, 6)  # precision/recall: k = 3 on both sides; density/coverage: k = 5 on the real
    with pytest.raises(GanbenchError, match=r"^--n-fake=3 is too small for metric pr: it needs >= 4"):
        check_sample_counts(["pr"], 3, 6)
    with pytest.raises(GanbenchError, match=r"^--n-real=5 is too small for metric pr: it needs >= 6 \(density and "
                                            r"coverage use the k = 5 nearest real neighbours, so 6 real samples\)$"):
        check_sample_counts(["pr"], 4, 5)
    with pytest.raises(GanbenchError, match=r"^--n-fake=1 is too small for metric fd: it needs >= 2"):
        check_sample_counts(["fd"], 1, 10)


def test_protocol_records_only_what_ran():
    assert metric_protocol(["fd"], 10000, 10000, 128, 4096) == {"fd_subsets": 5, "fd_subset_size": 2000}
    assert metric_protocol(["fd"], 9, 9, 128, 4096) == {}  # too few samples for FD's spread
    assert metric_protocol(["kid", "swd"], 1500, 800, 64, 4096) == {
        "kid_subsets": 100, "kid_subset_size": 800, "swd_projections": 64, "swd_samples": 800}
    assert metric_protocol(["is", "pr"], 50, 50, 128, 4096) == {"is_splits": 10, "pr_neighborhood": 3,
                                                                "dc_neighborhood": 5}


@pytest.mark.parametrize(("sha", "fd_key", "label"), [
    (INCEPTION_SHA256, "fid_inception_10k", "inception"),
    ("0" * 64, "fd_inception-unverified_10k", "inception-unverified"),
])
def test_fid_only_for_the_published_inception_weights(sha, fd_key, label):
    net = FeatureNet("inception", None, "2048", "logits_unbiased", "/w.pth", sha)
    assert net.label == label
    keys = metric_keys(net.label, 10000, ["fd", "is"])
    assert keys == {"fd": fd_key, "fd_std": f"{fd_key}_std_5x2k", "is": f"is_{label}_10k",
                    "is_std": f"is_{label}_10k_std_10x1k"}
    assert net.protocol["inception_weights"].startswith("torch-fidelity's" if sha == INCEPTION_SHA256 else "unverified")
    domain = FeatureNet("fmnist", None, "features", "logits", "/f.pt", "1" * 64)
    assert domain.label == "fmnist" and "inception_weights" not in domain.protocol


def test_a_metric_that_is_not_finite_is_absent_with_a_reason(digits_ckpt, monkeypatch, capsys):
    """Strict JSON: no bare NaN in the file or on stdout."""
    real = evaluate.fidelity_metrics
    monkeypatch.setattr(evaluate, "fidelity_metrics", lambda *a, **k: {**real(*a, **k), "is": float("nan")})
    assert evaluate.main(["--ckpt", str(digits_ckpt), "--n-fake", "20", "--metrics", "fd", "is"]) == 0
    printed = capsys.readouterr().out
    out = json.loads(printed, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert "is_digits_20" not in out["metrics"]
    assert out["not_computed"] == {"is_digits_20": "not finite (nan) on these samples"}
    assert "fd_digits_20" in out["metrics"]
    json.loads(open(out["written_to"]).read(), parse_constant=lambda c: pytest.fail(c))


def test_progress_writes_lines_when_not_a_terminal():
    stream = io.StringIO()
    with progress("fd_fmnist_10k: samples", 1000, stream=stream) as bar:
        for _ in range(8):
            bar.update(125)
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"ganbench: fd_fmnist_10k: samples: {n}/1000" for n in (125, 250, 375, 500, 625, 750, 875, 1000)]
    quiet = io.StringIO()
    with progress("x", 10, enabled=False, stream=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
