"""Planning a designed study: what it can detect, how long it takes, and which of its runs are done.

* :func:`detectable`: the smallest difference between two levels of each factor that the design finds
  at the chosen power (default 80 %, two-sided α = 0.05 per factor, before Holm), from the
  noncentral t distribution of the trial-level OLS contrast (ganbench.sweep.effects): its standard
  error is σ·sqrt(l'(X'X)^-1 l) for the worst pair of levels, with df = runs − parameters. It is
  given in units of σ, the residual standard deviation of trial medians (read it from a pilot
  study's fit), and, for the rates, as a worst-case bound in points with σ ≤ 0.5 (a fraction's
  standard deviation never exceeds that of a fair coin).
* :func:`measured_rate`: seconds per G iteration of one population fit of a design run (all its
  seeds as replicas), timed with the bench's plain loop of the model's own step on this machine.
* :func:`enqueue_design` / :func:`design_status`: design points as fixed Optuna trials
  (``enqueue_trial`` with user attribute ``design_point``), so that a rerun on the same storage
  enqueues only the points that are neither done, running nor waiting.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ganbench.sweep.design import Design, coding, is_data_factor, model_blocks

POWER = 0.8
ALPHA = 0.05


def _power(delta: float, se: float, df: int) -> float:
    from scipy.stats import nct, t

    crit = t.ppf(1 - ALPHA / 2, df)
    nc = delta / se
    p = float(nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc))
    if math.isnan(p):  # scipy's nct returns NaN at some (df, nc): the normal approximation there
        from scipy.stats import norm

        p = float(norm.sf(crit - nc) + norm.cdf(-crit - nc))
    return p


def detectable(design: Design, power: float = POWER) -> dict[str, float]:
    """Factor (short name) → smallest detectable difference between its two least precise levels, in σ.

    The leaderboard analyses each data set apart (:func:`ganbench.sweep.effects.study_effects`), so with a data-set
    factor the differences are those of one data set's runs (the worst data set), and the data set has none."""
    names = [f.rsplit(".", 1)[-1] for f in design.factors]
    sizes = [len(v) for v in design.levels]
    pairs = [(design.factors.index(a), design.factors.index(b)) for a, b in design.spec.interactions]
    data = [j for j, f in enumerate(design.factors) if is_data_factor(f)]
    if not data:
        return _detectable(design.cells, sizes, names, pairs, power)
    j = data[0]
    keep = [i for i in range(len(names)) if i != j]
    index = {old: new for new, old in enumerate(keep)}
    sub_pairs = [(index[a], index[b]) for a, b in pairs if j not in (a, b)]
    found = [_detectable(design.cells[design.cells[:, j] == level][:, keep], [sizes[i] for i in keep],
                         [names[i] for i in keep], sub_pairs, power) for level in range(sizes[j])]
    return {k: float(np.max([f[k] for f in found])) for k in found[0]}  # the worst data set; NaN if any is NaN


def _detectable(cells: np.ndarray, sizes: list[int], names: list[str], pairs: list[tuple[int, int]],
                power: float) -> dict[str, float]:
    from scipy.optimize import brentq

    blocks = model_blocks(cells, sizes, names, pairs)
    x = np.column_stack([np.ones(len(cells)), *blocks.values()])
    df = len(x) - np.linalg.matrix_rank(x)
    if df < 1:
        return {n: math.nan for n in names}
    cov = np.linalg.pinv(x.T @ x)
    ends = np.cumsum([1] + [b.shape[1] for b in blocks.values()])
    out = {}
    for (name, block), start in zip(blocks.items(), ends[:-1]):
        if ":" in name:
            continue
        code = coding(sizes[names.index(name)])
        se = 0.0
        for i in range(len(code)):
            for k in range(i):
                row = np.zeros(x.shape[1])
                row[start:start + block.shape[1]] = code[i] - code[k]
                se = max(se, float(np.sqrt(row @ cov @ row)))
        top = 10 * se
        out[name] = (float(brentq(lambda d, s=se: _power(d, s, df) - power, 1e-9 * se, top))
                     if _power(top, se, df) > power else math.nan)
    return out


def measured_rate(space: Any, params: dict[str, Any], steps: int = 20, warmup: int = 5) -> float:
    """Seconds per G iteration of one population fit of ``params`` (``len(space.seeds)`` replicas) on CPU."""
    import torch

    from ganbench.commands.bench import PlainLoop, build, random_batches
    from ganbench.sweep.space import cli_value

    argv = [x for k, v in space.config_values(params).items() for x in (f"--{k}", cli_value(v))]
    model, dm = build(space.base_config, [*argv, "--model.init_args.population", str(len(space.seeds))])
    device = torch.device("cpu")
    torch.manual_seed(0)
    loop = PlainLoop(model, random_batches(model, dm, device), dm.batch_size, device)
    loop.run(warmup)
    return loop.run(steps) / steps


def wall_time(space: Any, design: Design, workers: int = 1, sample: int = 6, steps: int = 20) -> tuple[float, str]:
    """Estimated seconds of training steps for the whole design: the mean measured rate of the first
    ``sample`` runs times the design's runs and budget, divided over ``workers`` (one population fit per run),
    each timed with the threads one worker gets (``cores // workers``)."""
    import torch

    from ganbench.sweep.study import worker_threads

    before, threads = torch.get_num_threads(), worker_threads(workers)
    torch.set_num_threads(threads)  # a worker's share, as run_sweep gives it
    try:
        rates = [measured_rate(space, run, steps) for run in design.runs[:sample]]
    finally:
        torch.set_num_threads(before)
    seconds = float(np.mean(rates)) * space.budget * len(design.runs) / max(1, workers)
    return seconds, (f"{np.mean(rates) * 1e3:.1f} ms per G iteration of a {len(space.seeds)}-replica population fit, "
                     f"mean of {len(rates)} runs timed for {steps} steps each with {threads} thread(s) on this machine "
                     "(training steps "
                     "only: metric evaluations and start-up are not included)")


def design_status(study: Any, design: Design) -> dict[str, list[int]]:
    """Design point indices by state: ``done`` (a complete or pruned trial), ``running``, ``waiting``, ``todo``."""
    from optuna.trial import TrialState

    state: dict[int, str] = {}
    rank = {"done": 3, "running": 2, "waiting": 1}
    for t in study.get_trials(deepcopy=False):
        point = t.user_attrs.get("design_point")
        if point is None:
            continue
        s = {TrialState.COMPLETE: "done", TrialState.PRUNED: "done", TrialState.RUNNING: "running",
             TrialState.WAITING: "waiting"}.get(t.state)
        if s and rank[s] > rank.get(state.get(point, ""), 0):
            state[point] = s
    out: dict[str, list[int]] = {"done": [], "running": [], "waiting": [], "todo": []}
    for i in range(len(design.runs)):
        out[state.get(i, "todo")].append(i)
    return out


def enqueue_design(study: Any, design: Design) -> dict[str, list[int]]:
    """Enqueue every design point that is not done, running or waiting (a failed one again); returns the
    status after enqueueing. Workers then run ``len(waiting)`` trials, each on a fixed design point."""
    status = design_status(study, design)
    for i in status["todo"]:
        study.enqueue_trial(design.runs[i], user_attrs={"design_point": i}, skip_if_exists=False)
    status["waiting"] = sorted(status["waiting"] + status["todo"])
    status["todo"] = []
    return status


def pilot_sigma(storage_url: str, study_name: str) -> tuple[dict[str, dict[str, float]], str]:
    """The residual SD of each outcome's trial-level fit in a finished study (per data set), and its
    seeds per trial and budget in words: what a next study's detectable differences are scaled by."""
    import optuna

    from ganbench import GanbenchError
    from ganbench.sweep.effects import study_effects
    from ganbench.sweep.leaderboard import load_board
    from ganbench.sweep.study import make_storage, storage_file, study_space

    path = storage_file(storage_url)  # --check creates nothing: a missing file is an error
    if path is not None and not path.is_file():
        raise GanbenchError(f"--pilot {study_name}: {path} does not exist (name its storage with --pilot-storage)")
    try:
        study = optuna.load_study(study_name=study_name, storage=make_storage(storage_url, None))
    except KeyError:
        raise GanbenchError(f"--pilot {study_name}: no such study in {storage_url}") from None
    sigma = {tag: result.sigma for tag, (result, _) in study_effects(study, load_board(study)).items() if result.sigma}
    if not sigma:
        raise GanbenchError(f"--pilot {study_name}: the study has no scored trials to estimate sigma from")
    space = study_space(study) or {}
    return sigma, f"{len(space.get('seeds', []))} seed(s) per trial, {space.get('budget')} G iterations"


def plan_lines(space: Any, workers: int = 1, power: float = POWER,
               pilot: tuple[str, dict[str, dict[str, float]], str] | None = None) -> str:
    """What ``ganbench sweep --check`` prints for a designed study; ``pilot`` = (study name, :func:`pilot_sigma`)
    puts the detectable differences on the metric's scale and in rate points."""
    from ganbench.sweep.design import describe, space_design

    design = space_design(space)
    if design is None:
        return ""
    mde = detectable(design, power)
    seconds, how = wall_time(space, design, workers)
    lines = [
        describe(space, design),
        f"smallest detectable difference between two levels at {power:.0%} power (two-sided t-test of the trial-level "
        "OLS contrast, alpha 0.05, worst pair of levels, within one data set as the leaderboard analyses it), "
        "in units of sigma = the residual SD of trial medians "
        "(from a pilot study: --pilot); divergence and collapse rates: at most 50 x that many points",
        "  " + ", ".join(f"{k} {v:.2f} sigma" for k, v in mde.items())]
    if pilot is not None:
        name, sigma, how_run = pilot
        lines.append(f"with sigma from the pilot study {name} ({how_run}; valid for a study with the same seeds per "
                     "trial and budget):")
        for tag, by_outcome in sigma.items():
            for outcome, sd in by_outcome.items():
                scale, unit = (sd, "") if outcome == "quality" else (100 * sd, " points")
                lines.append(f"  {tag} {outcome} (sigma {sd:.3g}): " + ", ".join(
                    f"{k} {v * scale:.2g}{unit}" for k, v in mde.items()))
    lines.append(f"estimated wall time with --workers {workers}: {seconds / 60:.0f} min ({how})")
    return "\n".join(lines)


def start_design(space: Any, storage_url: str | None, study_name: str | None) -> int:
    """Before a designed study runs: fail its stale trials (their heartbeat retry keeps the design point),
    enqueue the design points that are not done, running or waiting, and return the finished-trial count
    at which the design is complete (``run_sweep``'s ``n_trials``)."""
    import sys
    import warnings

    import optuna

    from ganbench.sweep.design import space_design
    from ganbench.sweep.resume import resume_failed
    from ganbench.sweep.study import default_storage, finished_count, make_storage, open_study

    design = space_design(space)
    storage = make_storage(storage_url or default_storage(space), space)
    study = open_study(space, storage, study_name or space.name)
    if isinstance(storage, optuna.storages.RDBStorage) and space.heartbeat_interval > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    resume_failed(study, space.max_retry)  # a design point that measured nothing resumes its fits
    status = enqueue_design(study, design)
    print(f"ganbench: {design.summary(len(space.seeds))}; {len(status['done'])} done, {len(status['running'])} "
          f"running elsewhere, {len(status['waiting'])} to run", file=sys.stderr)
    return finished_count(study) + len(status["waiting"])
