"""Which images to annotate strongly next, given an IoU score per image.

The paper's criterion (Sec. 6.2.1) is ``closest``: the n images whose image IoU
score (Eq. 2, predicted or oracle) is closest to a target β. The other strategies
are baselines and variants for the study.

Every strategy is deterministic: given the same scores, arguments and the same
state of ``rng``, it returns the same ids in the same order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

# Distances are rounded before ranking so that ties that are ties in decimal
# (|0.2 - 0.3| vs |0.4 - 0.3|) are ties in float too and fall to the image id.
_DECIMALS = 12

StrategyFn = Callable[[np.ndarray, np.ndarray, int, "float | None", "np.random.Generator | None",
                       float], list]


@dataclass(frozen=True)
class Strategy:
    """A selection strategy.

    Attributes:
        fn: (ids (P,) int64 ascending, scores (P,) float64, n, beta, rng, delta) →
            the selected ids.
        needs_beta: whether β must be given.
        needs_rng: whether a numpy Generator must be given.
        description: one line for CLIs and docs.
    """

    fn: StrategyFn
    needs_beta: bool
    needs_rng: bool
    description: str


def _rank(ids: np.ndarray, key: np.ndarray) -> np.ndarray:
    """ids ordered by key ascending, ties by id ascending. (P,) → (P,)."""
    return ids[np.lexsort((ids, np.round(key, _DECIMALS)))]


def _random(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in rng.choice(ids, size=n, replace=False)]


def _closest(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in _rank(ids, np.abs(scores - beta))[:n]]


def _lowest(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in _rank(ids, scores)[:n]]


def _highest(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in _rank(ids, -scores)[:n]]


def _band(ids, scores, n, beta, rng, delta) -> list[int]:
    dist = np.round(np.abs(scores - beta), _DECIMALS)
    inside = ids[dist <= round(delta, _DECIMALS)]
    if inside.size >= n:
        return [int(i) for i in rng.choice(inside, size=n, replace=False)]
    chosen = [int(i) for i in inside]
    rest = ~np.isin(ids, inside)
    chosen += [int(i) for i in _rank(ids[rest], dist[rest])[: n - inside.size]]
    return chosen


def _stratified(ids, scores, n, beta, rng, delta) -> list[int]:
    if n == 0:
        return []
    lo, hi = float(scores.min()), float(scores.max())
    # One target at the centre of each of n equal-width strata of [lo, hi]; each
    # takes the free image nearest to it (ties by id).
    targets = lo + (np.arange(n) + 0.5) * (hi - lo) / n
    free = np.ones(ids.size, dtype=bool)
    chosen: list[int] = []
    for t in targets:
        cand = np.nonzero(free)[0]
        best = cand[np.lexsort((ids[cand], np.round(np.abs(scores[cand] - t), _DECIMALS)))[0]]
        free[best] = False
        chosen.append(int(ids[best]))
    return chosen


STRATEGIES: dict[str, Strategy] = {
    "random": Strategy(_random, False, True, "n images uniformly at random (the paper's baseline)"),
    "closest": Strategy(_closest, True, False,
                        "the n images whose score is closest to beta (the paper, Sec. 6.2.1)"),
    "lowest": Strategy(_lowest, False, False, "the n lowest scores (hardest images)"),
    "highest": Strategy(_highest, False, False, "the n highest scores (easiest images)"),
    "band": Strategy(_band, True, True,
                     "uniformly within beta ± delta, filled up from the closest when too few"),
    "stratified": Strategy(_stratified, False, False,
                           "evenly over the score range: nearest image to n stratum centres"),
}


def select(strategy: str, scores: Mapping[int, float], n: int, beta: float | None = None,
           rng: np.random.Generator | None = None, *, delta: float = 0.1) -> list[int]:
    """Pick ``n`` image ids from a scored pool.

    Args:
        strategy: a key of `STRATEGIES`.
        scores: image id → image IoU score in [0, 1] (Eq. 2), the candidate pool.
        n: how many to pick, 0 ≤ n ≤ len(scores).
        beta: target score in [0, 1]; required by ``closest`` and ``band``, unused
            by the others.
        rng: numpy Generator; required by ``random`` and ``band``.
        delta: half-width of the ``band`` strategy, ≥ 0.

    Returns:
        n distinct image ids. ``closest``/``lowest``/``highest`` list them best
        first, ties by id ascending; ``random`` and ``band`` in draw order.

    Raises:
        ValueError: naming the offending argument.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
    spec = STRATEGIES[strategy]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be an int, got {n!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > len(scores):
        raise ValueError(f"n={n} is larger than the pool of scores ({len(scores)} images)")
    if spec.needs_beta:
        if beta is None:
            raise ValueError(f"beta is required by strategy {strategy!r}")
        if not (isinstance(beta, (int, float, np.floating)) and 0.0 <= float(beta) <= 1.0):
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    elif beta is not None and not (0.0 <= float(beta) <= 1.0):
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    if spec.needs_rng and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng (a numpy.random.Generator) is required by strategy {strategy!r}")
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    ids = np.asarray(sorted(int(i) for i in scores), dtype=np.int64)
    vals = np.asarray([float(scores[int(i)]) for i in ids], dtype=np.float64)
    if not np.isfinite(vals).all():
        bad = [int(i) for i in ids[~np.isfinite(vals)]][:5]
        raise ValueError(f"scores must be finite; not for image ids {bad}")
    return spec.fn(ids, vals, n, None if beta is None else float(beta), rng, float(delta))
