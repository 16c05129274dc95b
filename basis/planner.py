"""Budget planner: which configurations fit a number of annotator-days, and what AP to expect.

A configuration is (N, selection, pool fraction):

* N strongly annotated images of the pool (masks, t_full each);
* a selection: ``random`` costs nothing more; any score-based strategy
  (``closest``, the paper's mask-guided selection, …) needs IL+C labels for the
  pool's other images (`basis.budget.annotation_budget`);
* a pool fraction f of the additional pool that gets IL+C labels and is
  pseudo-annotated for a segmentation network (f = 0: the annotation network alone;
  the paper's Tables 5/6 use f = 1, Tables 7/8 f = 0.5), i.e. round(f · additional)
  more IL+C images (`basis.budget.segmentation_budget`).

Days are the paper's: 86 400 s of annotation time (Tables 6 and 8), not working days.

With the results of a finished sweep (a plain list of dicts, see `results_from_trials`)
each configuration gets the AP@0.5 measured for it: the mean over seeds, and for a
score-based selection the β with the best mean at that N (so the number is an
optimistic estimate: β is chosen on the same test set). ``random`` is matched with the
sweep's ``random`` trials and ``closest`` with its ``predicted`` ones (`SELECTION_MODES`):
``oracle`` needs the ground truth of the pool, which an annotation budget does not buy.
f = 0 is matched with the annotation network's AP, f > 0 with the segmentation network's
AP of trials with that pool fraction (a missing pool fraction counts as 1, as in
`analysis.tables`). The sweep should be on the data the plan is for.

Pure Python: no pandas here; the CLI reads the Parquet records and passes rows in.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from basis.budget import (
    SBD_ADDITIONAL,
    SECONDS_PER_DAY,
    VOC_TRAIN_POOL,
    AnnotationCosts,
    Budget,
    annotation_budget,
    segmentation_budget,
)
from basis.selection import STRATEGIES

#: selection of a plan → the sweep modes whose trials measure it
SELECTION_MODES: dict[str, tuple[str, ...]] = {"random": ("random",), "closest": ("predicted",)}
NETWORKS = ("annotation", "segmentation")


@dataclass(frozen=True)
class Expected:
    """The AP@0.5 a sweep measured for one configuration.

    Attributes:
        ap50: mean over seeds, in [0, 1].
        n_seeds: how many seeds (or rows without a seed) the mean is over.
        mode: the sweep mode it comes from (``random``, ``predicted`` …).
        beta: the β of the best mean for a score-based selection; None for random.
    """

    ap50: float
    n_seeds: int
    mode: str
    beta: float | None = None


@dataclass(frozen=True)
class Option:
    """One configuration and its cost.

    Attributes:
        N: strongly annotated images.
        selection: a strategy of `basis.selection.STRATEGIES`.
        pool_fraction: share of the additional pool labelled IL+C, in [0, 1].
        n_additional: round(pool_fraction · additional) images.
        budget: the cost (`Budget`: n_strong, n_weak, seconds, days).
        expected: measured AP@0.5, when a sweep has it.
    """

    N: int
    selection: str
    pool_fraction: float
    n_additional: int
    budget: Budget
    expected: Expected | None = None

    @property
    def network(self) -> str:
        """The network whose AP this configuration is judged by."""
        return "annotation" if self.pool_fraction == 0 else "segmentation"

    @property
    def days(self) -> float:
        return self.budget.days

    def describe(self) -> str:
        """One line, e.g. ``N=400 random, annotation network only``."""
        extra = ("annotation network only" if self.n_additional == 0 else
                 f"segmentation network on {self.n_additional} additional IL+C images "
                 f"({self.pool_fraction:.0%})")
        return f"N={self.N} {self.selection}, {extra}"


@dataclass(frozen=True)
class Plan:
    """The configurations of a planning question, split by whether they fit.

    Attributes:
        days: the budget in annotator-days.
        fits: configurations costing at most ``days``, cheapest first.
        over: the others, cheapest first.
        costs, pool_size, additional: the inputs, for the report.
    """

    days: float
    fits: tuple[Option, ...]
    over: tuple[Option, ...]
    costs: AnnotationCosts = field(default_factory=AnnotationCosts)
    pool_size: int = VOC_TRAIN_POOL
    additional: int = SBD_ADDITIONAL

    @property
    def best(self) -> Option | None:
        """The fitting configuration with the highest expected AP (ties: the cheaper)."""
        measured = [(o.expected.ap50, -o.budget.seconds, k, o)
                    for k, o in enumerate(self.fits) if o.expected is not None]
        if not measured:
            return None
        # the highest AP, then the cheapest, then the first listed
        return max(measured, key=lambda t: (t[0], t[1], -t[2]))[3]

    def to_markdown(self) -> str:
        """A Markdown table of the fitting configurations and a few lines around it."""
        c = self.costs
        lines = [f"Budget {self.days:.2f} annotator-days (86 400 s each); pool {self.pool_size}, "
                 f"additional {self.additional}; per image IL+C {c.t_ilc:.2f} s, "
                 f"Full {c.t_full:.2f} s.", ""]
        if not self.fits:
            lines.append(f"Nothing fits within {self.days:.2f} days.")
        else:
            lines += ["| days | N | selection | additional IL+C | network | masks | IL+C | "
                      "AP@0.5 (%) | β | seeds |",
                      "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|"]
            for o in self.fits:
                e = o.expected
                ap = f"{100 * e.ap50:.1f}" if e else "–"
                beta = f"{e.beta:g}" if e and e.beta is not None else "–"
                seeds = str(e.n_seeds) if e else "–"
                lines.append(f"| {o.days:.2f} | {o.N} | {o.selection} | {o.n_additional} "
                             f"({o.pool_fraction:.0%}) | {o.network} | {o.budget.n_strong} | "
                             f"{o.budget.n_weak} | {ap} | {beta} | {seeds} |")
            lines.append("")
            best = self.best
            if best is not None and best.expected is not None:
                e = best.expected
                at_beta = f", β={e.beta:g}" if e.beta is not None else ""
                lines.append(f"Best expected AP@0.5 within budget: {100 * e.ap50:.1f} % — "
                             f"{best.describe()} ({best.days:.2f} days; {e.mode}{at_beta}, "
                             f"mean of {e.n_seeds} seed(s)).")
            elif any(o.expected for o in self.over):
                lines.append("No configuration within budget has results in the sweep.")
        if self.over:
            cheap = self.over[0]
            lines.append(f"{len(self.over)} configuration(s) over budget; the cheapest needs "
                         f"{cheap.days:.2f} days: {cheap.describe()}.")
        return "\n".join(lines) + "\n"


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    """None for None/NaN, else the float."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v


def results_from_trials(trials: Iterable[Mapping]) -> list[dict]:
    """Rows of a sweep's ``trials`` table → the result rows `plan` joins.

    Every trial gives an ``annotation`` row from ``ap50`` and, when it has
    ``seg_ap50``, a ``segmentation`` row with its ``pool_fraction``. Trials without an
    AP are skipped.

    Args:
        trials: the *completed* trials of a sweep (the caller filters by status, whose
            words `analysis.schema.Status` defines), as dicts with the columns of its
            TRIALS table (at least N, mode, ap50; beta, seed, seg_ap50, pool_fraction
            optional).

    Returns:
        dicts {N, mode, beta, seed, ap50, network, pool_fraction}.
    """
    rows: list[dict] = []
    for t in trials:
        common = {"N": int(t["N"]), "mode": str(t["mode"]), "beta": _number(t.get("beta")),
                  "seed": t.get("seed")}
        if common["seed"] is not None and _number(common["seed"]) is None:
            common["seed"] = None
        ap = _number(t.get("ap50"))
        if ap is not None:
            rows.append({**common, "ap50": ap, "network": "annotation", "pool_fraction": None})
        seg = _number(t.get("seg_ap50"))
        if seg is not None:
            frac = _number(t.get("pool_fraction"))
            rows.append({**common, "ap50": seg, "network": "segmentation",
                         "pool_fraction": 1.0 if frac is None else frac})
    return rows


def _check_results(results: Sequence[Mapping]) -> list[dict]:
    clean = []
    for k, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise ValueError(f"results[{k}] must be a dict, got {type(r).__name__}")
        missing = {"N", "mode", "ap50"} - set(r)
        if missing:
            raise ValueError(f"results[{k}] lacks {sorted(missing)}")
        ap = _number(r["ap50"])
        if ap is None:      # a failed trial
            continue
        if not 0.0 <= ap <= 1.0:
            raise ValueError(f"results[{k}]: ap50 must be in [0, 1], got {r['ap50']!r}")
        network = r.get("network") or "annotation"
        if network not in NETWORKS:
            raise ValueError(f"results[{k}]: network must be one of {NETWORKS}, got {network!r}")
        beta = _number(r.get("beta"))
        if beta is not None and not 0.0 <= beta <= 1.0:
            raise ValueError(f"results[{k}]: beta must be in [0, 1], got {r['beta']!r}")
        frac = _number(r.get("pool_fraction"))
        seed = r.get("seed")
        clean.append({"N": int(r["N"]), "mode": str(r["mode"]), "beta": beta, "ap50": ap,
                      "network": network, "pool_fraction": 1.0 if frac is None else frac,
                      "seed": ("row", k) if seed is None or _number(seed) is None
                      else int(seed)})
    return clean


def expected_ap(results: Sequence[Mapping], N: int, selection: str, pool_fraction: float,
                modes: Mapping[str, Sequence[str]] = SELECTION_MODES) -> Expected | None:
    """The measured AP@0.5 of one configuration (see the module docstring), or None.

    Args:
        results: rows {N, mode, ap50, beta?, seed?, network?, pool_fraction?}; a
            missing network means ``annotation``, a missing pool_fraction 1.
        N, selection, pool_fraction: the configuration.
        modes: selection → sweep modes that measure it.
    """
    return _expected(_check_results(results), N, selection, pool_fraction, modes)


def _expected(rows: list[dict], N: int, selection: str, pool_fraction: float,
              modes: Mapping[str, Sequence[str]]) -> Expected | None:
    wanted = set(modes.get(selection, ()))
    network = "annotation" if pool_fraction == 0 else "segmentation"
    groups: dict[tuple[str, float | None], dict[object, list[float]]] = {}
    for r in rows:
        if r["N"] != N or r["mode"] not in wanted or r["network"] != network:
            continue
        if network == "segmentation" and not math.isclose(r["pool_fraction"], pool_fraction,
                                                          abs_tol=1e-9):
            continue
        groups.setdefault((r["mode"], r["beta"]), {}).setdefault(r["seed"], []).append(r["ap50"])
    if not groups:
        return None
    candidates = []
    for (mode, beta), per_seed in groups.items():
        means = [sum(v) / len(v) for v in per_seed.values()]
        candidates.append(Expected(sum(means) / len(means), len(means), mode, beta))
    # the best mean; ties → the smaller β, then the mode name, for a deterministic answer
    return min(candidates, key=lambda e: (-e.ap50, -1.0 if e.beta is None else e.beta, e.mode))


def plan(days: float, *, costs: AnnotationCosts = AnnotationCosts(),
         pool_size: int = VOC_TRAIN_POOL, additional: int = SBD_ADDITIONAL,
         N: Sequence[int] = (200, 400, 800),
         pool_fractions: Sequence[float] = (0.0, 0.5, 1.0),
         selections: Sequence[str] = ("random", "closest"),
         results: Sequence[Mapping] | None = None,
         modes: Mapping[str, Sequence[str]] = SELECTION_MODES) -> Plan:
    """Every configuration N × selection × pool fraction, split by whether it fits.

    Args:
        days: annotator-days available (86 400 s each), finite and > 0.
        costs: per-image annotation costs of the dataset (`AnnotationCosts`).
        pool_size: images in the pool the strong ones are drawn from (VOC12: 1464).
        additional: images in the additional pool (SBD: 9118), ≥ 0.
        N: candidate numbers of strongly annotated images, each in [1, pool_size].
        pool_fractions: shares of the additional pool to label IL+C, each in [0, 1];
            fractions > 0 need ``additional`` > 0.
        selections: strategies of `basis.selection.STRATEGIES`.
        results: rows of a finished sweep (see `results_from_trials`), optional.
        modes: selection → sweep modes whose trials measure it.

    Returns:
        A `Plan`: ``fits`` and ``over`` sorted by cost (ties by N, fraction, the
        order of ``selections``); ``best`` the highest expected AP that fits.

    Raises:
        ValueError: naming the offending argument.
    """
    if isinstance(days, bool) or not isinstance(days, numbers.Real) or not math.isfinite(days) \
            or days <= 0:
        raise ValueError(f"days must be a finite number > 0, got {days!r}")
    if not isinstance(costs, AnnotationCosts):
        raise ValueError(f"costs must be an AnnotationCosts, got {type(costs).__name__}")
    for name, value, low in (("pool_size", pool_size, 1), ("additional", additional, 0)):
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not N:
        raise ValueError("N must list at least one number of strong images")
    for n in N:
        if not _is_int(n) or not 1 <= n <= pool_size:
            raise ValueError(f"N={n!r} must be an int in [1, pool_size={pool_size}]")
    if not pool_fractions:
        raise ValueError("pool_fractions must list at least one fraction (0: none)")
    for f in pool_fractions:
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 <= f <= 1.0:
            raise ValueError(f"pool fraction {f!r} must be a number in [0, 1]")
        if f > 0 and additional == 0:
            raise ValueError(f"pool fraction {f:g} > 0 needs an additional pool (additional=0)")
    if not selections:
        raise ValueError("selections must list at least one strategy")
    for s in selections:
        if s not in STRATEGIES:
            raise ValueError(f"selection must be one of {sorted(STRATEGIES)}, got {s!r}")
    rows = _check_results(results) if results is not None else None

    options: list[tuple[tuple, Option]] = []
    for n in sorted(set(int(n) for n in N)):
        for f in sorted(set(float(f) for f in pool_fractions)):
            n_add = int(round(f * additional))
            for k, s in enumerate(dict.fromkeys(selections)):
                if f == 0:
                    budget = annotation_budget(n, s, pool_size, costs)
                else:
                    budget = segmentation_budget(n, n_add, s, pool_size, costs)
                exp = _expected(rows, n, s, f, modes) if rows is not None else None
                options.append(((budget.seconds, n, f, k),
                                Option(n, s, f, n_add, budget, exp)))
    options.sort(key=lambda t: t[0])
    limit = days * SECONDS_PER_DAY * (1 + 1e-12)
    fits = tuple(o for _, o in options if o.budget.seconds <= limit)
    over = tuple(o for _, o in options if o.budget.seconds > limit)
    return Plan(float(days), fits, over, costs, int(pool_size), int(additional))
