"""Which cells a study trains: ``design: factorial | fractional | random`` in a sweep file.

* ``factorial``: every cell of the factors, each ``replicates`` times.
* ``fractional``: a balanced fraction. A factor with 2^m levels is written as m two-level
  pseudo-factors; the pseudo-factors get the smallest regular two-level fraction (pyDOE3's
  ``fracfact`` builds it from generators found by a depth-first search) in which every main
  effect and every two-factor interaction named under ``interactions`` is clear of every other
  one of them (strength 2 for the main effects: every level of every factor equally often,
  every pair of main-effect columns orthogonal). A factor whose level count is not a power of
  two (5 losses), and the data set (whose qualities are analysed apart), are crossed with that
  fraction in full, which keeps both properties within every data set.
* ``random``: Optuna's sampler chooses cells (the behaviour without ``design``).

Cells the model refuses (a batch-dependent D normalization with a per-sample penalty,
``GANModule.__init__``) are never trained: a factorial design keeps the valid cells; a fraction's
refused runs are replaced by valid cells chosen one by one to maximise det(X'X) of the analysis
model (sequential D-optimal augmentation over the valid candidate set). What that costs is
reported (:attr:`Design.cost`): the D-efficiency and the variance of every main effect against
the unconstrained design, and every named interaction that loses degrees of freedom.

Nuisance hyper-parameters are drawn inside each cell from a scrambled Sobol sequence
(scipy.stats.qmc), one sequence per cell seeded from ``design_seed``: a cell's replicates are
spread over the nuisance ranges, and every level of every factor sees the same distribution.
The structural nuisance (``n_critic``: what the networks or the step depend on) is drawn once per
cell, and a cell's replicates follow one another, so ``--population-trials`` batches them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganbench import GanbenchError

KINDS = ("factorial", "fractional", "random")
#: sweep keys this module reads (validated by :func:`parse_design` before any trial runs)
DESIGN_KEYS = frozenset({"design", "replicates", "interactions", "design_seed"})
_SEARCH_NODES = 200_000
ALIAS_SHOWN = 0.05  # alias coefficients below this are counted, not listed  # generator search budget per fraction size


@dataclass(frozen=True)
class DesignSpec:
    kind: str = "random"
    replicates: int = 1
    #: named two-factor interactions (full factor keys), which a fraction keeps estimable
    interactions: tuple[tuple[str, str], ...] = ()
    seed: int = 0


def parse_design(raw: dict[str, Any], factors: dict[str, tuple[Any, ...]], where: str) -> DesignSpec:
    """The design keys of a sweep file; every problem is one GanbenchError line naming the key."""
    kind = raw.get("design", "random")
    if kind not in KINDS:
        raise GanbenchError(f"{where}: design={kind!r} is not valid; choose one of: {', '.join(KINDS)}")
    replicates, seed = raw.get("replicates", 1), raw.get("design_seed", 0)
    for key, value, low in (("replicates", replicates, 1), ("design_seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise GanbenchError(f"{where}: {key}={value!r} must be an integer >= {low}")
    pairs = raw.get("interactions") or []
    if kind == "random" and ("replicates" in raw or pairs):
        key = "replicates" if "replicates" in raw else "interactions"
        raise GanbenchError(f"{where}: {key} needs design: factorial or fractional (design is random)")
    names = {k: k for k in factors} | {k.rsplit(".", 1)[-1]: k for k in factors}
    out = []
    if not isinstance(pairs, list):
        raise GanbenchError(f"{where}: interactions must be a list of [factor, factor] pairs")
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise GanbenchError(f"{where}: interactions entry {pair!r} must be a pair [factor, factor]")
        bad = [p for p in pair if p not in names]
        if bad:
            raise GanbenchError(f"{where}: interactions names {bad[0]!r}, which is not a factor; factors: "
                                f"{', '.join(k.rsplit('.', 1)[-1] for k in factors)}")
        a, b = (names[p] for p in pair)
        if a == b:
            raise GanbenchError(f"{where}: interactions entry {pair!r} pairs a factor with itself")
        out.append(tuple(sorted((a, b), key=list(factors).index)))
    return DesignSpec(kind, replicates, tuple(dict.fromkeys(out)), seed)


def check_design(spec: DesignSpec, factors: dict[str, tuple[Any, ...]], fixed: dict[str, Any], family: Any,
                 where: str) -> None:
    """Build the design once so that an unusable one stops the sweep before any trial (one line)."""
    if spec.kind != "random":
        try:
            build_design(spec, factors, None, refusal(factors, fixed, family))
        except GanbenchError as e:
            raise GanbenchError(f"{where}: design={spec.kind}: {e}") from None


# ------------------------------------------------------------------------------ model matrices
def coding(levels: int) -> np.ndarray:
    """``(levels, levels-1)`` orthonormal Helmert contrasts (every column sums to zero)."""
    from patsy.contrasts import Helmert

    m = np.asarray(Helmert().code_without_intercept(list(range(levels))).matrix, dtype=float)
    return m / np.linalg.norm(m, axis=0)


def model_blocks(cells: np.ndarray, sizes: Sequence[int], names: Sequence[str],
                 pairs: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """Effect name → its columns for the runs ``cells`` (level indices): main effects, then ``pairs``."""
    codes = [coding(s) for s in sizes]
    blocks = {names[j]: codes[j][cells[:, j]] for j in range(len(sizes)) if sizes[j] > 1}
    for a, b in pairs:
        if sizes[a] > 1 and sizes[b] > 1:
            x, y = blocks[names[a]], blocks[names[b]]
            blocks[f"{names[a]}:{names[b]}"] = (x[:, :, None] * y[:, None, :]).reshape(len(cells), -1)
    return blocks


def _matrix(blocks: dict[str, np.ndarray], n: int) -> np.ndarray:
    return np.column_stack([np.ones(n), *blocks.values()])


def alias_lines(cells: np.ndarray, sizes: Sequence[int], names: Sequence[str],
                pairs: Sequence[tuple[int, int]]) -> list[str]:
    """Which effects the design confounds: for every estimated effect (main effects and the named
    interactions) the two-factor interactions that bias it, from the alias matrix (X1'X1)^-1 X1'X2
    (Montgomery, Design and Analysis of Experiments, §8.5) with its largest absolute entry per pair
    of effects (1: fully aliased, as in a regular fraction; below 1: partially). A main effect that
    the runs cannot separate from the others is refused with the reason; a named interaction that
    they cannot estimate in full is said so and left out of the estimated effects."""
    blocks = model_blocks(cells, sizes, names, pairs)
    mains = {k: v for k, v in blocks.items() if ":" not in k}
    x1 = _matrix(mains, len(cells))
    if np.linalg.matrix_rank(x1) < x1.shape[1]:
        raise GanbenchError(f"the design cannot separate its main effects: {not_estimable(mains, len(cells))}")
    lines, kept = [], dict(mains)
    for k, v in blocks.items():
        if ":" in k:
            rank = np.linalg.matrix_rank(np.column_stack([x1, v])) - x1.shape[1]
            if rank < v.shape[1]:
                lines.append(f"{k}: only {rank} of {v.shape[1]} degrees of freedom estimable; not estimated")
            else:
                kept[k] = v
                x1 = np.column_stack([x1, v])
    others = [p for p in itertools.combinations(range(len(sizes)), 2) if p not in pairs]
    extra = {k: v for k, v in model_blocks(cells, sizes, names, others).items() if ":" in k}
    if not extra:
        return lines + ["no aliasing: every effect up to two-factor interactions is estimable"]
    x2 = np.column_stack(list(extra.values()))
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=0), 1e-300)  # noqa: E731 (1: a column fully aliased)
    alias = np.linalg.lstsq(unit(x1), unit(x2), rcond=None)[0]
    starts = np.cumsum([1] + [b.shape[1] for b in kept.values()])
    cols = np.cumsum([0] + [b.shape[1] for b in extra.values()])
    for (name, block), s in zip(kept.items(), starts):
        size = {k: float(np.abs(alias[s:s + block.shape[1], c0:c1]).max())
                for k, c0, c1 in zip(extra, cols[:-1], cols[1:])}
        hit = [f"{k} ({v:.2f})" for k, v in sorted(size.items(), key=lambda kv: -kv[1]) if v >= ALIAS_SHOWN]
        small = sum(1e-9 < v < ALIAS_SHOWN for v in size.values())
        text = (f"aliased with {', '.join(hit)}" if hit else
                "clear of every two-factor interaction" if not small else f"no alias coefficient >= {ALIAS_SHOWN}")
        lines.append(f"{name}: {text}" + (f" ({small} two-factor interaction(s) below {ALIAS_SHOWN})" if small else ""))
    return lines


def not_estimable(blocks: dict[str, np.ndarray], n: int) -> str:
    """The first effect whose columns depend on the mean and the effects before it, named with them."""
    done = [np.ones((n, 1))]
    for i, (name, block) in enumerate(blocks.items()):
        x = np.column_stack([*done, block])
        if np.linalg.matrix_rank(x) < x.shape[1]:
            before = list(blocks)[:i]
            return (f"{name} is confounded with " + (", ".join(before) if before else "the mean")
                    + " (its columns are linear combinations of theirs on these runs)")
        done.append(block)
    return "rank deficient"


# ------------------------------------------------------------------------------ fractions
def _pseudo(sizes: Sequence[int], cross: Sequence[int] = ()) -> tuple[list[list[int]], list[int]]:
    """Pseudo-factor bit positions of every 2^m-level factor (empty for others), and the crossed factors:
    those whose level count is not 2^m, and ``cross``."""
    bits, crossed, k = [], [], 0
    for j, s in enumerate(sizes):
        m = s.bit_length() - 1
        if s > 1 and s == 1 << m and j not in cross:
            bits.append(list(range(k, k + m)))
            k += m
        else:
            bits.append([])
            crossed.append(j)
    return bits, crossed


def _words(bits: list[int]) -> list[int]:
    return [sum(1 << b for b, on in zip(bits, mask) if on)
            for mask in itertools.product((0, 1), repeat=len(bits)) if any(mask)]


def _forbidden(bits: list[list[int]], pairs: Sequence[tuple[int, int]]) -> set[int]:
    """Words the defining relation must not contain: every required effect word and every product of two."""
    required = [w for b in bits if b for w in _words(b)]
    required += [u ^ v for a, b in pairs if bits[a] and bits[b] for u in _words(bits[a]) for v in _words(bits[b])]
    return set(required) | {u ^ v for u, v in itertools.combinations(required, 2)}


def _generators(k: int, p: int, forbidden: set[int]) -> list[int] | None:
    """p defining words ``bit(k-p+i) ^ w_i`` (w_i over the k-p basic bits) whose group avoids ``forbidden``."""
    n, budget = k - p, [_SEARCH_NODES]

    def dfs(chosen: list[int], group: list[int]) -> list[int] | None:
        if len(chosen) == p:
            return chosen
        for w in range(1, 1 << n):
            budget[0] -= 1
            if budget[0] < 0:
                return None
            g = (1 << (n + len(chosen))) | w
            new = [x ^ g for x in group]
            if not forbidden.intersection(new):
                found = dfs([*chosen, w], group + new)
                if found is not None or budget[0] < 0:
                    return found
        return None

    return dfs([], [0])


def regular_fraction(sizes: Sequence[int], pairs: Sequence[tuple[int, int]], cross: Sequence[int] = ()
                     ) -> np.ndarray:
    """Level indices ``(runs, factors)`` of the smallest regular fraction that keeps the main effects and
    ``pairs`` estimable and strength 2, crossed with every factor whose level count is not 2^m and with
    the factors ``cross`` (the data set: each data set gets the whole fraction, analysed on its own)."""
    import pyDOE3

    bits, crossed = _pseudo(sizes, cross)
    k = sum(map(len, bits))
    forbidden, need = _forbidden(bits, pairs), 1 + sum(s - 1 for s in sizes if s > 1)
    gens: list[int] = []
    for p in range(k - 1, 0, -1):
        if 1 << (k - p) < need - sum(sizes[j] - 1 for j in crossed):
            continue
        found = _generators(k, p, forbidden)
        if found is not None:
            gens = found
            break
    n = k - len(gens)
    letters = [chr(97 + i) for i in range(n)]
    words = letters + ["".join(letters[i] for i in range(n) if w >> i & 1) for w in gens]
    pseudo = ((pyDOE3.fracfact(" ".join(words)) + 1) / 2).astype(int) if k else np.zeros((1, 0), int)
    base = np.zeros((len(pseudo), len(sizes)), int)
    for j, b in enumerate(bits):
        for i, bit in enumerate(b):
            base[:, j] += pseudo[:, bit] << i
    runs = []
    for combo in itertools.product(*(range(sizes[j]) for j in crossed)):
        part = base.copy()
        part[:, crossed] = combo
        runs.append(part)
    return np.concatenate(runs)


def is_data_factor(key: str) -> bool:
    """Whether a factor key is the data set (``data.dataset``): its qualities are analysed apart, never pooled."""
    return key.startswith("data.") and key.rsplit(".", 1)[-1] == "dataset"


def full_factorial(sizes: Sequence[int]) -> np.ndarray:
    import pyDOE3

    return pyDOE3.fullfact(list(sizes)).astype(int).reshape(-1, len(sizes))


# ------------------------------------------------------------------------------ refused cells
def refusal(factors: dict[str, tuple[Any, ...]], fixed: dict[str, Any], family: Any
            ) -> Callable[[dict[str, Any]], str | None]:
    """The model's own cell rule (``GANModule.__init__``: a per-sample penalty needs a D normalization
    that does not couple the samples), read from the family's ``per_sample_penalties`` and
    ``BATCH_DEPENDENT``; a key that is not a factor takes its fixed value (overrides, base config,
    family default). Returns cell values → reason or None."""
    import inspect

    from ganbench.nn.norms import BATCH_DEPENDENT

    defaults = {n: p.default for n, p in inspect.signature(family.__init__).parameters.items()}
    per_sample = getattr(family, "per_sample_penalties", frozenset())

    def value(cell: dict[str, Any], name: str) -> Any:
        key = f"model.init_args.{name}"
        return cell[key] if key in cell else fixed.get(key, defaults.get(name))

    def reason(cell: dict[str, Any]) -> str | None:
        norm, penalty = value(cell, "d_norm"), value(cell, "penalty")
        if penalty in per_sample and norm in BATCH_DEPENDENT:
            return f"d_norm={norm} with penalty={penalty} (a per-sample penalty under a batch-dependent norm)"
        return None

    return reason


def family_of(base_config: str) -> tuple[Any, dict[str, Any]]:
    """The base config's model class and its ``model.init_args.*`` values."""
    import importlib

    from ganbench.reliability import read_yaml

    base = read_yaml(base_config) or {}
    model = base.get("model") or {}
    path = model.get("class_path", "ganbench.models.GANModule") if isinstance(model, dict) else str(model)
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name), init_args_of(base)


def init_args_of(base: dict[str, Any]) -> dict[str, Any]:
    """``model.init_args.NAME`` → value, for the base config's model init_args."""
    model = base.get("model")
    args = (model.get("init_args") or {}) if isinstance(model, dict) else {}
    return {f"model.init_args.{k}": v for k, v in args.items()}


# ------------------------------------------------------------------------------ the design
@dataclass(frozen=True)
class Design:
    spec: DesignSpec
    factors: tuple[str, ...]
    levels: tuple[tuple[Any, ...], ...]
    #: level indices ``(runs, factors)``, replicates included, in run order
    cells: np.ndarray
    #: one mapping per run: every factor and every nuisance parameter (what ``enqueue_trial`` receives)
    runs: tuple[dict[str, Any], ...]
    aliases: tuple[str, ...]
    #: what the refused cells cost, in words (empty when no cell is refused)
    cost: tuple[str, ...]

    @property
    def distinct_cells(self) -> int:
        return len({tuple(r) for r in self.cells})

    def summary(self, seeds: int) -> str:
        points = len(self.runs) // self.spec.replicates
        twice = points - self.distinct_cells
        again = f" ({twice} replacement cell(s) drawn twice)" if twice else ""
        return (f"design {self.spec.kind}: {len(self.runs)} runs = {points} cells{again} x "
                f"{self.spec.replicates} replicate(s), {seeds} seed(s) each = {len(self.runs) * seeds} fits")


def _pairs(spec: DesignSpec, factors: Sequence[str]) -> list[tuple[int, int]]:
    return [(factors.index(a), factors.index(b)) for a, b in spec.interactions]


def _augment(valid: np.ndarray, candidates: np.ndarray, count: int, sizes: Sequence[int],
             pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Add ``count`` candidate rows one at a time, each maximising det(X'X) (x' M^-1 x, Fedorov 1972)."""
    names = [str(j) for j in range(len(sizes))]
    xc = _matrix(model_blocks(candidates, sizes, names, pairs), len(candidates))
    x = _matrix(model_blocks(valid, sizes, names, pairs), len(valid)) if len(valid) else xc[:0]
    info = x.T @ x + 1e-6 * np.eye(xc.shape[1])
    chosen = []
    for _ in range(count):
        gain = np.einsum("ij,jk,ik->i", xc, np.linalg.inv(info), xc)
        best = int(np.argmax(gain))
        chosen.append(best)
        info += np.outer(xc[best], xc[best])
    return np.concatenate([valid, candidates[chosen]]) if chosen else valid


def _cost(before: np.ndarray, after: np.ndarray, sizes: Sequence[int], names: Sequence[str],
          pairs: Sequence[tuple[int, int]], refused: list[str]) -> list[str]:
    """D-efficiency and per-effect variance of ``after`` against ``before`` (per run, same model)."""
    b0, b1 = (model_blocks(c, sizes, names, pairs) for c in (before, after))
    x0, x1 = _matrix(b0, len(before)), _matrix(b1, len(after))
    m0, m1 = x0.T @ x0 / len(before), x1.T @ x1 / len(after)
    lines = [f"refused cells: {'; '.join(refused)}"]
    r0, r1 = np.linalg.matrix_rank(m0), np.linalg.matrix_rank(m1)
    if r1 < r0:
        lines.append(f"not estimable on the valid cells: {not_estimable(b1, len(after))} "
                     f"({r0 - r1} degree(s) of freedom lost)")
        return lines
    d = (np.linalg.det(m1) / np.linalg.det(m0)) ** (1 / m0.shape[0])
    v0, v1 = np.diag(np.linalg.inv(m0)), np.diag(np.linalg.inv(m1))
    starts = np.cumsum([1] + [b.shape[1] for b in b0.values()])
    infl = [f"{k} x{v1[s:s + b.shape[1]].mean() / v0[s:s + b.shape[1]].mean():.2f}"
            for (k, b), s in zip(b0.items(), starts)]
    lines.append(f"D-efficiency {d:.3f} of the unconstrained design; variance per run of each effect: "
                 + ", ".join(infl))
    return lines


def nuisance_draws(nuisance: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` points of a scrambled Sobol sequence (seeded) mapped onto the nuisance ranges."""
    from scipy.stats import qmc

    if not nuisance or n == 0:
        return [{} for _ in range(n)]
    u = qmc.Sobol(len(nuisance), scramble=True, seed=seed).random_base2(max(0, math.ceil(math.log2(n))))[:n]
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for j, (name, spec) in enumerate(nuisance.items()):
        lo, hi = float(spec.low), float(spec.high)
        if spec.integer:
            vals = [int(min(hi, lo + math.floor(v * (hi - lo + 1)))) for v in u[:, j]]
        elif spec.log:
            vals = [float(math.exp(math.log(lo) + v * (math.log(hi) - math.log(lo)))) for v in u[:, j]]
        else:
            vals = [float(lo + v * (hi - lo)) for v in u[:, j]]
        for row, v in zip(out, vals):
            row[name] = min(max(v, type(v)(lo)), type(v)(hi))  # rounding of exp(log) never leaves the range
    return out


def build_design(spec: DesignSpec, factors: dict[str, tuple[Any, ...]], nuisance: dict[str, Any] | None = None,
                 refuse: Callable[[dict[str, Any]], str | None] | None = None,
                 structural: Sequence[str] = ()) -> Design:
    """The runs of a factorial or fractional design over ``factors`` (see the module docstring).

    The replicates of a cell follow one another in the run order (the cells' order is random) and share the
    cell's draw of the ``structural`` nuisance (those that fix the networks or the step, e.g. ``n_critic``), so
    that ``--population-trials`` trains them as one population fit; the other nuisance is drawn per replicate."""
    if spec.kind == "random":
        raise GanbenchError("design: random has no fixed runs; Optuna's sampler chooses the cells")
    names, levels = list(factors), [tuple(v) for v in factors.values()]
    sizes, pairs = [len(v) for v in levels], _pairs(spec, list(factors))
    grid = full_factorial(sizes)
    data = [j for j, n in enumerate(names) if is_data_factor(n)]
    base = grid if spec.kind == "factorial" else regular_fraction(sizes, pairs, data)
    short = [n.rsplit(".", 1)[-1] for n in names]

    def values(row: np.ndarray) -> dict[str, Any]:
        return {n: levels[j][i] for j, (n, i) in enumerate(zip(names, row))}

    refuse = refuse or (lambda cell: None)
    bad = np.array([refuse(values(r)) is not None for r in base], dtype=bool)
    cost: list[str] = []
    cells = base
    if bad.any():
        reasons = sorted({refuse(values(r)) or "" for r in base[bad]})
        ok_grid = grid[[refuse(values(r)) is None for r in grid]]
        cells = base[~bad] if spec.kind == "factorial" else _augment(base[~bad], ok_grid, int(bad.sum()), sizes, pairs)
        cost = [f"{int(bad.sum())} of {len(base)} design cells are refused by the model and "
                + ("left out" if spec.kind == "factorial" else "replaced by D-optimal valid cells"),
                *_cost(base, cells, sizes, short, pairs, reasons)]
    aliases = alias_lines(cells, sizes, short, pairs)
    r = spec.replicates
    order = (np.random.default_rng(spec.seed).permutation(len(cells))[:, None] * r + np.arange(r)).ravel()
    rows = np.repeat(cells, r, axis=0)
    runs = [values(row) for row in rows]
    by_cell: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(rows):
        by_cell.setdefault(tuple(row), []).append(i)
    for c, (_, idx) in enumerate(sorted(by_cell.items())):
        for i, draw in zip(idx, nuisance_draws(nuisance or {}, len(idx), spec.seed * 100_003 + c)):
            runs[i].update(draw)
    for first in range(0, len(runs), r):  # a cell's replicates: one structural draw, one population fit
        for i in range(first + 1, first + r):
            runs[i].update({k: runs[first][k] for k in structural if k in runs[first]})
    return Design(spec, tuple(names), tuple(levels), rows[order], tuple(runs[i] for i in order),
                  tuple(aliases), tuple(cost))


def space_design(space: Any) -> Design | None:
    """The design of a validated :class:`~ganbench.sweep.space.SweepSpace` (None for ``design: random``)."""
    spec = getattr(space, "design", None)
    if spec is None or spec.kind == "random":
        return None
    family, fixed = family_of(space.base_config)
    refuse = refusal(space.factors, {**fixed, **space.overrides}, family)
    return build_design(spec, space.factors, space.nuisance, refuse, space.structural)


def design_dict(spec: DesignSpec | None) -> dict[str, Any]:
    """What the leaderboard reads of the design (a study user attribute)."""
    spec = spec or DesignSpec()
    return {"kind": spec.kind, "replicates": spec.replicates, "interactions": [list(p) for p in spec.interactions],
            "seed": spec.seed}


def describe(space: Any, design: Design) -> str:
    """The ``--check`` lines of a space's design: runs, cells, replicates, seeds, refused-cell cost, aliasing."""
    lines = [design.summary(len(space.seeds)), *design.cost, "alias structure (largest alias coefficient per effect):"]
    return "\n".join([*lines, *(f"  {a}" for a in design.aliases)])
