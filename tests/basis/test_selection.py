"""Selection strategies: the paper's closest-to-β, baselines, and argument errors."""
from __future__ import annotations

import numpy as np
import pytest

from basis.selection import STRATEGIES, select

SCORES = {10: 0.2, 3: 0.4, 7: 0.35, 1: 0.9, 5: 0.0, 8: 0.25}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_registry_names():
    assert set(STRATEGIES) == {"random", "closest", "lowest", "highest", "band", "stratified"}


def test_closest_ranks_by_distance_and_breaks_ties_by_id():
    # β=0.3: 0.25 (id 8) and 0.35 (id 7) are both 0.05 away (in decimal; in float
    # they differ in the 17th digit) → id 7 first; then 0.2 (10) and 0.4 (3) tie.
    assert select("closest", SCORES, 4, beta=0.3, rng=None) == [7, 8, 3, 10]
    assert select("closest", SCORES, 1, beta=1.0, rng=None) == [1]
    assert select("closest", SCORES, 0, beta=0.5, rng=None) == []


def test_closest_same_answer_for_any_key_order():
    shuffled = dict(reversed(list(SCORES.items())))
    assert select("closest", shuffled, 5, 0.3, None) == select("closest", SCORES, 5, 0.3, None)


def test_lowest_highest():
    s = {4: 0.5, 2: 0.5, 9: 0.1, 6: 0.8}
    assert select("lowest", s, 3, None, None) == [9, 2, 4]
    assert select("highest", s, 3, None, None) == [6, 2, 4]


def test_random_deterministic_given_rng_and_distinct():
    a = select("random", SCORES, 4, None, rng(1))
    assert a == select("random", SCORES, 4, None, rng(1))
    assert len(set(a)) == 4 and set(a) <= set(SCORES)
    draws = {tuple(select("random", SCORES, 3, None, rng(s))) for s in range(20)}
    assert len(draws) > 1  # the rng is actually used


def test_band_inside_then_filled_from_closest():
    s = {i: v for i, v in enumerate([0.0, 0.45, 0.5, 0.55, 0.61, 0.7, 0.9])}
    inside = select("band", s, 2, 0.5, rng(0), delta=0.05)
    assert set(inside) <= {1, 2, 3} and len(set(inside)) == 2
    # Band has 3 (0.45, 0.5, 0.55 — 0.45 and 0.55 on the edge); 2 more from the
    # closest outside: 0.61 (id 4), then 0.7 (id 5).
    got = select("band", s, 5, 0.5, rng(0), delta=0.05)
    assert set(got[:3]) == {1, 2, 3} and got[3:] == [4, 5]


def test_stratified_spreads_over_range():
    s = {i: i / 100 for i in range(101)}  # 0.00 … 1.00
    got = select("stratified", s, 4, None, None)
    # Stratum centres of [0, 1] in 4: 0.125, 0.375, 0.625, 0.875 → nearest, ties low id.
    assert got == [12, 37, 62, 87]
    skewed = {i: (0.9 if i < 50 else i / 1000) for i in range(60)}
    got = select("stratified", skewed, 3, None, None)
    assert len(set(got)) == 3
    assert max(skewed[i] for i in got) == 0.9 and min(skewed[i] for i in got) < 0.1


@pytest.mark.parametrize("kwargs, match", [
    (dict(strategy="nearest", n=1, beta=0.3), r"strategy must be one of \['band', 'closest'"),
    (dict(strategy="closest", n=7, beta=0.3), r"n=7 is larger than the pool"),
    (dict(strategy="closest", n=-1, beta=0.3), r"n must be >= 0"),
    (dict(strategy="closest", n=1.5, beta=0.3), r"n must be an int"),
    (dict(strategy="closest", n=1, beta=None), r"beta is required by strategy 'closest'"),
    (dict(strategy="band", n=1, beta=None), r"beta is required by strategy 'band'"),
    (dict(strategy="closest", n=1, beta=1.2), r"beta must be in \[0, 1\]"),
    (dict(strategy="closest", n=1, beta=-0.1), r"beta must be in \[0, 1\]"),
    (dict(strategy="random", n=1, beta=None), r"rng .* is required by strategy 'random'"),
])
def test_errors_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select(scores=SCORES, rng=kwargs.pop("rng", None), **kwargs)


def test_non_finite_scores_and_bad_delta():
    with pytest.raises(ValueError, match="scores must be finite; not for image ids \\[2\\]"):
        select("lowest", {1: 0.1, 2: float("nan")}, 1, None, None)
    with pytest.raises(ValueError, match="delta"):
        select("band", SCORES, 1, 0.3, rng(), delta=-0.1)


# --- ties broken by the rng ------------------------------------------------------

TIED = {i: 0.5 for i in range(40)}  # every image equally good for every strategy
RANKING = ["closest", "lowest", "highest", "band", "stratified"]


@pytest.mark.parametrize("name", RANKING)
def test_ties_are_broken_by_the_rng(name):
    n = 5
    # band: β far from the tied scores, so the band is empty and all n come from the
    # ranked fill-up
    beta = 0.0 if name == "band" else 0.5
    pick = lambda seed: select(name, TIED, n, beta, rng(seed), delta=0.1)  # noqa: E731
    assert pick(1) == pick(1)
    draws = {tuple(pick(seed)) for seed in range(6)}
    assert len(draws) > 1                      # the seed decides which tied images
    assert all(len(set(d)) == n and set(d) <= set(TIED) for d in draws)
    assert any(d != tuple(range(n)) for d in draws)   # not the lowest ids


@pytest.mark.parametrize("name", ["closest", "lowest", "highest", "stratified"])
def test_ties_fall_to_the_id_without_an_rng(name):
    assert select(name, TIED, 4, 0.5, None) == [0, 1, 2, 3]


def test_untied_order_does_not_depend_on_the_rng():
    distinct = {i: (7 * i % 41) / 41 for i in range(41)}          # 41 distinct scores
    for name in ("closest", "lowest", "highest", "stratified"):
        ref = select(name, distinct, 12, 0.3, None)
        assert all(select(name, distinct, 12, 0.3, rng(s)) == ref for s in range(5))
    by_score = sorted(distinct, key=distinct.get)
    assert select("lowest", distinct, 12, None, rng(3)) == by_score[:12]


def test_ties_only_reorder_within_a_tie():
    # three groups at distances 0.0, 0.1 and 0.2 from β, 6 images each; taking 9 takes
    # all of the nearest group and 3 of the second, which 3 is up to the seed
    scores = {i: (0.5, 0.6, 0.3)[i % 3] for i in range(18)}
    groups = {v: {i for i in scores if scores[i] == v} for v in (0.5, 0.6, 0.3)}
    seen = set()
    for s in range(8):
        got = select("closest", scores, 9, 0.5, rng(s))
        assert set(got[:6]) == groups[0.5] and set(got[6:]) <= groups[0.6]
        seen.add(frozenset(got[6:]))
    assert len(seen) > 1


def test_key_order_does_not_matter_with_an_rng():
    shuffled = dict(reversed(list(TIED.items())))
    assert select("closest", shuffled, 6, 0.5, rng(2)) == select("closest", TIED, 6, 0.5, rng(2))


def test_rng_of_the_wrong_type():
    with pytest.raises(ValueError, match="numpy.random.Generator or None"):
        select("closest", SCORES, 1, 0.3, rng=np.random.RandomState(0))
