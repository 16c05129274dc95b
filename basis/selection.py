"""Which images to annotate strongly next, given an IoU score per image.

The paper's criterion (Sec. 6.2.1) is ``closest``: the n images whose image IoU
score (Eq. 2, predicted or oracle) is closest to a target β. The other strategies
are baselines and variants for the study.

Every strategy is deterministic: given the same scores, arguments and the same
state of ``rng``, it returns the same ids in the same order.

Ties (equal scores, or equal distances to β) are broken by a draw from ``rng``: one
random permutation of the pool (ids ascending) gives each image a tie key, so which of
several equally good images is taken depends on the seed the caller gave the rng (the
study seeds it by (seed, N)), never on the image ids, and images that are not tied
keep their order. Without an rng (``rng=None``, allowed where a strategy does not
need one) ties fall to the image id, ascending.

Two kinds of acquisition baseline work from other inputs than an IoU score: the
uncertainty scores of the initial network (`UNCERTAINTIES`, computed by
`basis.infer.predict`), which the study ranks with ``highest`` (most uncertain first),
and the k-center greedy core-set (`k_center_greedy`, Sener & Savarese 2018) on the
encoder's pooled features.

Multi-round selection (active learning in several iterations) is built from three
pieces: `plan_rounds` splits the N − n_init images to select into per-round sizes
N'_1 … N'_R, `select_round` picks one round's images while excluding every image
already labelled, and `select_rounds` chains them, re-scoring the pool through a
callback between rounds (in the study the callback retrains the annotation network
on the images labelled so far and pseudo-annotates the pool again). With R = 1 this
is the paper's single selection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

# Distances are rounded before ranking so that ties that are ties in decimal
# (|0.2 - 0.3| vs |0.4 - 0.3|) are ties in float too and fall to the tie key.
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


def _tie_keys(ids: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """(P,) tie keys for ``ids`` (ascending): a permutation drawn from ``rng``, or the
    ids themselves without one."""
    return ids if rng is None else rng.permutation(ids.size)


def _rank(ids: np.ndarray, key: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """ids ordered by key ascending (rounded to ``_DECIMALS``), ties by ``tie``
    ascending. (P,) → (P,)."""
    return ids[np.lexsort((tie, np.round(key, _DECIMALS)))]


def _random(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in rng.choice(ids, size=n, replace=False)]


def _closest(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in _rank(ids, np.abs(scores - beta), _tie_keys(ids, rng))[:n]]


def _lowest(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in _rank(ids, scores, _tie_keys(ids, rng))[:n]]


def _highest(ids, scores, n, beta, rng, delta) -> list[int]:
    return [int(i) for i in _rank(ids, -scores, _tie_keys(ids, rng))[:n]]


def _band(ids, scores, n, beta, rng, delta) -> list[int]:
    dist = np.round(np.abs(scores - beta), _DECIMALS)
    inside = ids[dist <= round(delta, _DECIMALS)]
    if inside.size >= n:
        return [int(i) for i in rng.choice(inside, size=n, replace=False)]
    chosen = [int(i) for i in inside]
    rest = ~np.isin(ids, inside)
    tie = _tie_keys(ids, rng)[rest]
    chosen += [int(i) for i in _rank(ids[rest], dist[rest], tie)[: n - inside.size]]
    return chosen


def _stratified(ids, scores, n, beta, rng, delta) -> list[int]:
    if n == 0:
        return []
    lo, hi = float(scores.min()), float(scores.max())
    # One target at the centre of each of n equal-width strata of [lo, hi]; each
    # takes the free image nearest to it (ties by the tie key).
    targets = lo + (np.arange(n) + 0.5) * (hi - lo) / n
    tie = _tie_keys(ids, rng)
    free = np.ones(ids.size, dtype=bool)
    chosen: list[int] = []
    for t in targets:
        cand = np.nonzero(free)[0]
        best = cand[np.lexsort((tie[cand], np.round(np.abs(scores[cand] - t), _DECIMALS)))[0]]
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


#: Per-image uncertainties of the initial network (`basis.infer.predict`,
#: ``ImagePrediction.extras``); a baseline selects the highest (most uncertain) images.
UNCERTAINTIES: dict[str, str] = {
    "entropy": "mean class entropy over the emitted decoder steps (object classes)",
    "least_confidence": "1 − max class probability, averaged over the emitted steps",
    "mask_entropy": "binary entropy of σ(mask logit), averaged over pixels and masks",
}


def k_center_greedy(features: np.ndarray, ids: Sequence[int], centres: Collection[int], n: int,
                    rng: np.random.Generator | None = None) -> list[int]:
    """The k-center greedy core-set (Sener & Savarese 2018): ``n`` times, take the image
    farthest (Euclidean) from its nearest centre and make it a centre.

    Args:
        features: (P, F) one feature vector per image of ``ids`` (e.g. the encoder's
            global-average-pooled last feature map), finite.
        ids: (P,) distinct image ids, the rows of ``features``.
        centres: ids already chosen (the initial images); never selected. Ids that are
            not in ``ids`` are ignored. Empty: the first pick is a tie among every
            image, broken by ``rng``.
        n: how many to pick, 0 ≤ n ≤ number of ids not in ``centres``.
        rng: breaks ties among equally far images (module docstring); None: by id.

    Returns:
        n distinct ids, in pick order, none in ``centres``.

    Raises:
        ValueError: naming the offending argument.
    """
    x = np.asarray(features, dtype=np.float64)
    ids_arr = np.asarray([int(i) for i in ids], dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != ids_arr.size:
        raise ValueError(f"features must be (P, F) with P = len(ids) = {ids_arr.size}, "
                         f"got shape {x.shape}")
    if np.unique(ids_arr).size != ids_arr.size:
        raise ValueError("ids must be distinct")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    order = np.argsort(ids_arr)          # work in id order, so the tie keys match `select`
    ids_arr, x = ids_arr[order], x[order]
    is_centre = np.isin(ids_arr, np.asarray([int(i) for i in centres], dtype=np.int64))
    n_free = int((~is_centre).sum())
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= n_free:
        raise ValueError(f"n must be an int in [0, {n_free}] (images not yet chosen), "
                         f"got {n!r}")
    tie = _tie_keys(ids_arr, rng)
    nearest = np.full(ids_arr.size, np.inf)          # (P,) distance to the nearest centre

    def add(k: np.ndarray) -> None:
        for c in np.atleast_1d(k):
            np.minimum(nearest, np.sqrt(((x - x[c]) ** 2).sum(1)), out=nearest)

    add(np.nonzero(is_centre)[0])
    taken = is_centre.copy()
    chosen: list[int] = []
    for _ in range(int(n)):
        far = np.where(taken, -np.inf, np.round(nearest, _DECIMALS))
        best = np.nonzero(far == far.max())[0]
        k = best[np.argmin(tie[best])]
        taken[k] = True
        chosen.append(int(ids_arr[k]))
        add(np.asarray(k))
    return chosen


def select(strategy: str, scores: Mapping[int, float], n: int, beta: float | None = None,
           rng: np.random.Generator | None = None, *, delta: float = 0.1) -> list[int]:
    """Pick ``n`` image ids from a scored pool.

    Args:
        strategy: a key of `STRATEGIES`.
        scores: image id → image IoU score in [0, 1] (Eq. 2), the candidate pool.
        n: how many to pick, 0 ≤ n ≤ len(scores).
        beta: target score in [0, 1]; required by ``closest`` and ``band``, unused
            by the others.
        rng: numpy Generator; required by ``random`` and ``band``. The others use it,
            when given, to break ties (module docstring); without it ties go by id.
        delta: half-width of the ``band`` strategy, ≥ 0.

    Returns:
        n distinct image ids. ``closest``/``lowest``/``highest`` list them best
        first, ties in the order of the rng's tie keys (by id ascending without an
        rng); ``random`` and ``band`` in draw order.

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
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    ids = np.asarray(sorted(int(i) for i in scores), dtype=np.int64)
    vals = np.asarray([float(scores[int(i)]) for i in ids], dtype=np.float64)
    if not np.isfinite(vals).all():
        bad = [int(i) for i in ids[~np.isfinite(vals)]][:5]
        raise ValueError(f"scores must be finite; not for image ids {bad}")
    return spec.fn(ids, vals, n, None if beta is None else float(beta), rng, float(delta))


def plan_rounds(n_init: int, N: int, rounds: int) -> list[int]:
    """Per-round sizes N' of a multi-round selection from n_init up to N images.

    Split rule: the N − n_init images are shared as evenly as integers allow, the
    remainder going to the earliest rounds (which select from the weakest model,
    so they are never the smaller ones): ``plan_rounds(100, 400, 4) == [75, 75, 75,
    75]``, ``plan_rounds(100, 200, 3) == [34, 33, 33]``. The sizes sum to N − n_init
    and every round selects at least one image.

    Args:
        n_init: images labelled before the first round (the paper: 100), ≥ 0.
        N: images labelled after the last round, > n_init.
        rounds: number of selection rounds R, 1 ≤ R ≤ N − n_init.

    Returns:
        R ints ≥ 1, non-increasing, summing to N − n_init.

    Raises:
        ValueError: naming the offending argument.
    """
    for name, value in (("n_init", n_init), ("N", N), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n_init < 0:
        raise ValueError(f"n_init must be >= 0, got {n_init}")
    if N <= n_init:
        raise ValueError(f"N={N} must be larger than n_init={n_init}: nothing to select")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    total = int(N) - int(n_init)
    if rounds > total:
        raise ValueError(f"rounds={rounds} is more than the {total} images to select "
                         f"(N={N} - n_init={n_init}): a round would select none")
    q, r = divmod(total, int(rounds))
    return [q + 1] * r + [q] * (int(rounds) - r)


def select_round(strategy: str, scores: Mapping[int, float], already: Collection[int], n: int,
                 beta: float | None = None, rng: np.random.Generator | None = None, *,
                 delta: float = 0.1) -> list[int]:
    """One round of a multi-round selection: `select` over the images not yet labelled.

    Args:
        strategy, beta, rng, delta: as in `select`.
        scores: image id → score for the pool (it may include labelled images; they
            are skipped).
        already: ids labelled before this round (initial and earlier rounds); ids
            that are not in ``scores`` are allowed and ignored.
        n: N' of this round, 0 ≤ n ≤ number of unlabelled scored images.

    Returns:
        n distinct ids, none of them in ``already``, ordered as `select` orders them.

    Raises:
        ValueError: as `select`, and when n exceeds the images not yet labelled.
    """
    done = set()
    for i in already:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"already must hold int image ids, got {i!r}")
        done.add(int(i))
    free = {int(i): v for i, v in scores.items() if int(i) not in done}
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > len(free):
        raise ValueError(f"n={n} is larger than the {len(free)} scored images not yet labelled "
                         f"({len(scores) - len(free)} of {len(scores)} are)")
    return select(strategy, free, n, beta, rng, delta=delta)


def select_rounds(strategy: str, score_fn: Callable[[frozenset[int]], Mapping[int, float]],
                  initial: Collection[int], sizes: Sequence[int], beta: float | None = None,
                  rng: np.random.Generator | None = None, *, delta: float = 0.1
                  ) -> list[list[int]]:
    """Several rounds of selection, re-scoring the pool before each.

    Args:
        strategy, beta, rng, delta: as in `select`; the same ``rng`` is used by every
            round in turn, so the whole run is deterministic given its seed.
        score_fn: labelled ids → scores of the pool (image id → Eq. 2 score), called
            once per round before it selects, with every id labelled so far.
        initial: ids labelled before the first round.
        sizes: N' per round, e.g. from `plan_rounds`.

    Returns:
        One list of ids per round; no id appears twice or in ``initial``.
    """
    labelled = {int(i) for i in initial}
    picked: list[list[int]] = []
    for k, n in enumerate(sizes):
        try:
            chosen = select_round(strategy, score_fn(frozenset(labelled)), labelled, n, beta,
                                  rng, delta=delta)
        except ValueError as err:
            raise ValueError(f"round {k + 1} of {len(sizes)}: {err}") from err
        labelled.update(chosen)
        picked.append(chosen)
    return picked
