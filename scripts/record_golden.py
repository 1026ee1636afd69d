"""Golden outputs: what every shipped config computes on every executor, kept in tests/golden/.

For each config in configs/*.yaml (and configs/profiles/sngan_cpu.yaml stacked on configs/sngan.yaml)
and each executor — ``eager`` (Lightning's hook dispatch around every backward and optimizer step),
``direct`` (the same step with plain ``backward``/``step``, what a fit runs when nothing listens to
those hooks), ``graph`` (the step captured and replayed by :class:`ganbench.models.graph.EmulatedGraphs`,
the CUDA-graph semantics on the CPU) and ``population3`` (three replicas, seeds 0, 1, 2, in one
batched step) — this runs a tiny fit (:data:`STEPS` G iterations, seed 0, widths of 4 to 16, 16×16
digits, a 2 000-point ring or 16×16 Fashion-MNIST pairs) and writes ``tests/golden/<config>-<executor>.pt``:

- ``tensors``: every entry of the checkpoint's ``state_dict`` (G, D, EMA of G, buffers), every tensor
  of the optimizer states (``optimizer/<i>/<param index>/<key>``) and the replicas' random streams,
  each as its :func:`digest` — dtype, shape, a hash of its bytes (equal exactly when ``torch.equal``
  holds), its sum and its sum of absolute values — which keeps all 88 files under 3 MB (``--full``
  keeps the tensors themselves, to measure a difference element by element);
- ``values``: the optimizers' hyperparameters, the scheduler states, the G and D step counts, which
  replicas are alive, and what the executor did (hooks dispatched, graphs captured and replayed);
- ``metrics``: metrics.csv as written, the strings themselves (columns that measure time would be
  left out; there are none);
- ``notices``: the lines a fit printed about the executor (a graph that falls back, and why);
- ``platform``: torch's version and CPU capability, which bit-identical results depend on;
- ``refused``: instead of all that, the one-line error ganbench gives when the config cannot run on
  the executor (a family that cannot be batched into a population).

tests/test_golden.py reruns every case and requires each of these to be equal, bit for bit.

    python scripts/record_golden.py                 # every case (85 s of CPU, one thread)
    python scripts/record_golden.py gan sngan_cpu   # the cases of these configs only
    python scripts/record_golden.py --executors graph   # the cases of this executor only
    python scripts/record_golden.py --check         # compare with the stored files, write nothing
    python scripts/record_golden.py --full --out /tmp/before   # whole tensors, elsewhere
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import importlib
import io
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for folder in (ROOT, ROOT / "scripts"):  # ganbench and tests; this file as ``record_golden`` (a class path)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import lightning as L  # noqa: E402
import torch  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
STEPS = 5  # G iterations: a graph warms up for 3, is captured at the 4th and replayed from there
SEED = 0
EXECUTORS = ("eager", "direct", "graph", "population3")
#: metrics.csv columns that measure time (none today), left out: they differ from run to run
TIMING = re.compile(r"time|wall|per_s|_sec$")
#: configs on 2-D toy data (their own); image-to-image configs on their own paired Fashion-MNIST data;
#: every other config on 16×16 digits with its own architecture choice
TOY_CONFIGS = {"pacgan_ring", "pacgan_grid"}
IMG2IMG_CONFIGS = {"pix2pix", "cyclegan"}
#: configs already as small as a case can be (the Dirac-GAN: one G and one D parameter on a point mass)
AS_SHIPPED_CONFIGS = {"diracgan"}
QUIET = ["--trainer.accelerator", "cpu", "--run.wandb", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
#: per-config arguments beyond the tiny sizes (which keep a fit near a second): StackGAN's stage I
#: below the 16×16 output, a small code in the autoencoder D, two residual blocks in CycleGAN's G
CODE = ["--model.init_args.code_dim", "8"]
EXTRA = {"stackgan": ["--model.init_args.c_dim", "8", "--model.init_args.stage1_resolution", "8"],
         "ebgan": CODE, "began": CODE, "magan": CODE, "cyclegan": ["--model.init_args.n_blocks", "2"]}
#: every case: 16 fixed latents for the sample grid (64 by default), 8-dimensional where the tiny
#: argument lists keep a config's own latent size
SMALL = ["--model.init_args.n_samples", "16", "--model.init_args.latent_dim", "8"]


def configs() -> dict[str, list[str]]:
    """Case name → the config files stacked for it."""
    found = {p.stem: [str(p.relative_to(ROOT))] for p in sorted((ROOT / "configs").glob("*.yaml"))}
    found["sngan_cpu"] = ["configs/sngan.yaml", "configs/profiles/sngan_cpu.yaml"]
    return found


def cases() -> list[tuple[str, str]]:
    return [(config, executor) for config in configs() for executor in EXECUTORS]


def golden_path(config: str, executor: str, folder: Path = GOLDEN) -> Path:
    return folder / f"{config}-{executor}.pt"


def needs_fashion_mnist(config: str) -> bool:
    return config in IMG2IMG_CONFIGS


def tiny_args(config: str) -> list[str]:
    """The tests' tiny-run argument lists (tests/test_population.py TOY and IMAGES, tests/test_img2img.py FAST)."""
    from tests.test_img2img import FAST
    from tests.test_population import IMAGES, TOY

    if config in AS_SHIPPED_CONFIGS:
        return [*QUIET, "--trainer.log_every_n_steps", "1"]
    if config in IMG2IMG_CONFIGS:
        base = [*FAST, "--run.sample_every", "1000", "--run.checkpoint_every", "1000"]
    elif config in TOY_CONFIGS:
        base = [*TOY, "--model.init_args.d_width", "16"]
    else:
        base = [*TOY, *IMAGES]
    return [*SMALL, *base, *EXTRA.get(config, []), "--trainer.log_every_n_steps", "1"]


class LightningDispatch(L.Callback):
    """Implements ``on_before_backward``, so every backward and optimizer step of the fit goes through
    Lightning's hook dispatch (the eager executor); counts the backward passes it saw."""

    calls = 0

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        type(self).calls += 1


EXECUTOR_ARGS = {
    "eager": ["--trainer.callbacks+", '{"class_path": "record_golden.LightningDispatch"}'],
    "direct": [],
    "graph": ["--model.init_args.cuda_graph", "true"],
    "population3": ["--model.init_args.population", "3"],
}


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def platform_key() -> dict[str, str]:
    """What bit-identical results depend on besides ganbench: torch's version and the CPU kernels it
    picks (float sums run in a different order with AVX2 than with AVX512)."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def argv(config: str, executor: str, root: Path) -> list[str]:
    files = [arg for path in configs()[config] for arg in ("--config", path)]
    return ["fit", *files, "--trainer.default_root_dir", str(root), "--seed_everything", str(SEED),
            "--trainer.max_steps", str(STEPS), *tiny_args(config), *EXECUTOR_ARGS[executor]]


def run_case(config: str, executor: str) -> dict[str, Any]:
    """Fit ``config`` on ``executor`` in a temporary folder; what the golden file holds."""
    from ganbench.cli import main
    from ganbench.models.base import GANModule
    from tests.test_graph import CountingGraphs as graphs  # the emulated graphs, counting captures and replays

    os.environ.setdefault("WANDB_MODE", "offline")
    graphs.captures = graphs.replays = 0
    dispatch = importlib.import_module("record_golden").LightningDispatch  # the class the CLI instantiates
    dispatch.calls = 0
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory(prefix="ganbench-golden-") as tmp, _one_thread():
        root = Path(tmp) / "run"
        original = GANModule.graph_backend
        GANModule.graph_backend = graphs
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv(config, executor, root))
        finally:
            GANModule.graph_backend = original
        lines = (out.getvalue() + err.getvalue()).splitlines()
        record: dict[str, Any] = {"config": config, "executor": executor, "steps": STEPS, "seed": SEED,
                                  "platform": platform_key()}
        if code != 0:
            errors = [x for x in lines if x.startswith("ganbench: error:")]
            if not errors:
                raise RuntimeError(f"{config}/{executor}: exit {code} without an error line:\n" + "\n".join(lines))
            return {**record, "refused": errors[-1]}
        ckpt = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
        with open(root / "metrics.csv", newline="") as f:
            rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0] if rows else []) if not TIMING.search(name)]
    metrics = [[row[i] for i in keep] for row in rows]
    notices = [x for x in lines if "falls back" in x]
    if executor == "eager" and dispatch.calls == 0 or executor == "graph" and not (graphs.captures or notices):
        raise RuntimeError(f"{config}/{executor}: the fit did not run on that executor")
    tensors, values = _checkpoint_contents(ckpt)
    values["executor"] = {"eager": {"hooked_backwards": dispatch.calls},
                          "graph": {"captures": graphs.captures, "replays": graphs.replays}}.get(executor, {})
    return {**record, "refused": None, "tensors": tensors, "values": values, "metrics": metrics,
            "notices": notices}


def _checkpoint_contents(ckpt: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"state_dict/{k}": v.detach().clone() for k, v in ckpt["state_dict"].items()}
    values: dict[str, Any] = {"global_step": ckpt["global_step"], "optimizer_groups": [], "lr_schedulers": []}
    for i, opt in enumerate(ckpt["optimizer_states"]):
        for p, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optimizer/{i}/{p}/{key}"] = torch.as_tensor(value).clone()
        groups = []
        for g, group in enumerate(opt["param_groups"]):
            plain = {}
            for key, value in group.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer/{i}/group{g}/{key}"] = value.clone()
                else:
                    plain[key] = list(value) if isinstance(value, tuple) else value
            groups.append(plain)
        values["optimizer_groups"].append(groups)
    for sched in ckpt.get("lr_schedulers", []):
        values["lr_schedulers"].append({k: v for k, v in sched.items() if not k.startswith("_")})
    extra = ckpt.get("ganbench", {})
    for r, state in enumerate(extra.get("rng") or []):
        tensors[f"rng/{r}"] = torch.as_tensor(state).clone()
    for key in ("family", "d_steps", "population", "replica_seeds", "alive", "replica_divergence"):
        if key in extra:
            values[key] = extra[key]
    return tensors, values


def digest(t: torch.Tensor) -> tuple:
    """(dtype, shape, 128-bit hash of the bytes, float64 Σx, Σ|x|): two tensors have the same hash
    exactly when ``torch.equal`` holds (−0.0 counted as 0.0) or both hold NaN in the same places."""
    t = t.detach().cpu().contiguous()
    if t.is_floating_point():
        t = torch.where(t.isnan(), torch.full_like(t, float("nan")), t + 0.0)  # −0.0 + 0.0 = +0.0
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    finite = t.double().nan_to_num(0.0, 0.0, 0.0) if t.dtype != torch.bool else t.double()
    return (str(t.dtype).removeprefix("torch."), tuple(t.shape), hashlib.sha256(raw).digest()[:16],
            finite.sum().item(), finite.abs().sum().item())


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the golden file keeps of a record: each tensor as its :func:`digest`."""
    if record.get("refused") is not None:
        return record
    return {**record, "tensors": {k: digest(v) for k, v in record["tensors"].items()}}


def first_difference(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """The first way ``actual`` (a record) differs from ``expected`` (a golden file, or a record), or
    None when they are equal: tensors bit for bit, every other value exactly."""
    case = f"{expected['config']}/{expected['executor']}"
    for key in ("steps", "seed", "refused", "notices"):
        if expected.get(key) != actual.get(key):
            return f"{case}: {key} was {expected.get(key)!r}, now {actual.get(key)!r}"
    if expected["refused"] is not None:
        return None
    want, got = expected["tensors"], actual["tensors"]
    if set(want) != set(got):
        return (f"{case}: tensors missing {sorted(set(want) - set(got))[:5]}, "
                f"new {sorted(set(got) - set(want))[:5]}")
    for key, a in want.items():
        b = got[key]
        da = a if isinstance(a, tuple) else digest(a)
        db = b if isinstance(b, tuple) else digest(b)
        if da[:2] != db[:2]:
            return f"{case}: tensor {key} was {da[0]}{list(da[1])}, now {db[0]}{list(db[1])}"
        if da[2] != db[2]:
            detail = f"sum {da[3]!r} -> {db[3]!r}, sum of |x| {da[4]!r} -> {db[4]!r}"
            if torch.is_tensor(a) and torch.is_tensor(b) and a.is_floating_point():
                detail += f", max |difference| {(a.double() - b.double()).abs().nan_to_num(0.0).max().item():.3g}"
            return f"{case}: tensor {key} differs ({detail})"
    for key in sorted(set(expected["values"]) | set(actual["values"])):
        if expected["values"].get(key) != actual["values"].get(key):
            return f"{case}: {key} was {expected['values'].get(key)!r}, now {actual['values'].get(key)!r}"
    head_a, head_b = expected["metrics"][:1], actual["metrics"][:1]
    if head_a != head_b:
        return f"{case}: metrics.csv columns were {head_a}, now {head_b}"
    for n, (a, b) in enumerate(zip(expected["metrics"][1:], actual["metrics"][1:], strict=False), start=1):
        for column, x, y in zip(head_a[0], a, b, strict=True):
            if x != y:
                return f"{case}: metrics.csv row {n} column {column} was {x}, now {y}"
    if len(expected["metrics"]) != len(actual["metrics"]):
        return f"{case}: metrics.csv had {len(expected['metrics'])} lines, now {len(actual['metrics'])}"
    return None


def load(config: str, executor: str, folder: Path = GOLDEN) -> dict[str, Any]:
    return torch.load(golden_path(config, executor, folder), weights_only=False)


def main(argv_: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="case names (config stems, and sngan_cpu); default: all")
    parser.add_argument("--executors", default=",".join(EXECUTORS),
                        help=f"comma-separated executors of the cases (default: all, {','.join(EXECUTORS)})")
    parser.add_argument("--check", action="store_true", help="compare with the stored files instead of writing")
    parser.add_argument("--out", type=Path, default=GOLDEN, help="folder of the files (default tests/golden)")
    parser.add_argument("--full", action="store_true",
                        help="keep whole tensors, not their digests (to measure a difference element by element: "
                             "record --full --out DIR at two commits, then --check --full --out DIR at one)")
    args = parser.parse_args(argv_)
    unknown = sorted(set(args.configs) - set(configs()))
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; valid: {', '.join(configs())}")
    executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    if sorted(set(executors) - set(EXECUTORS)):
        parser.error(f"unknown executor {sorted(set(executors) - set(EXECUTORS))[0]!r}; valid: {', '.join(EXECUTORS)}")
    for name in ("lightning.pytorch", "lightning.fabric"):  # "Seed set to 0", "GPU available: False", ...
        logging.getLogger(name).setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for config, executor in cases():
        if args.configs and config not in args.configs or executor not in executors:
            continue
        record = run_case(config, executor)
        path = golden_path(config, executor, args.out)
        if args.check:
            why = first_difference(load(config, executor, args.out), record) if path.exists() else f"{path} is missing"
            failed += why is not None
            print(why or f"{config}/{executor}: equal")
            continue
        tmp = path.with_suffix(".tmp")
        torch.save(record if args.full else summary(record), tmp)
        tmp.replace(path)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"{shown}: {record['refused'] or 'recorded'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
