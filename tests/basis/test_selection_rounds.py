"""Multi-round selection: per-round sizes, exclusion of labelled images, re-scoring."""
from __future__ import annotations

import numpy as np
import pytest

from basis.selection import STRATEGIES, plan_rounds, select, select_round, select_rounds

SCORES = {10: 0.2, 3: 0.4, 7: 0.35, 1: 0.9, 5: 0.0, 8: 0.25}


@pytest.mark.parametrize("n_init, N, rounds, expected", [
    (100, 400, 1, [300]),
    (100, 400, 4, [75, 75, 75, 75]),
    (100, 200, 3, [34, 33, 33]),
    (0, 5, 5, [1, 1, 1, 1, 1]),
    (20, 27, 2, [4, 3]),
])
def test_plan_rounds_split_rule(n_init, N, rounds, expected):
    sizes = plan_rounds(n_init, N, rounds)
    assert sizes == expected
    assert sum(sizes) == N - n_init and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("args, match", [
    ((100, 100, 1), "nothing to select"),
    ((100, 50, 1), "nothing to select"),
    ((-1, 10, 1), "n_init must be >= 0"),
    ((0, 10, 0), "rounds must be >= 1"),
    ((0, 3, 4), "a round would select none"),
    ((0, 10.0, 2), "N must be an int"),
    ((0, 10, True), "rounds must be an int"),
])
def test_plan_rounds_errors(args, match):
    with pytest.raises(ValueError, match=match):
        plan_rounds(*args)


def test_select_round_excludes_already_labelled():
    # β=0.3 over the whole pool: [7, 8, 3, 10]; with 7 and 8 labelled → 3, 10 next
    assert select_round("closest", SCORES, {7, 8, 999}, 2, beta=0.3) == [3, 10]
    assert select_round("lowest", SCORES, [5], 1) == [10]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_select_round_every_strategy_never_repeats_and_is_seeded(name):
    already = {3, 7}
    a = select_round(name, SCORES, already, 3, beta=0.3, rng=np.random.default_rng(4))
    b = select_round(name, SCORES, already, 3, beta=0.3, rng=np.random.default_rng(4))
    assert a == b and len(set(a)) == 3 and not set(a) & already


def test_select_round_too_many():
    with pytest.raises(ValueError, match="not yet labelled"):
        select_round("closest", SCORES, {1, 3, 5}, 4, beta=0.5)
    with pytest.raises(ValueError, match="int image ids"):
        select_round("closest", SCORES, {"a"}, 1, beta=0.5)


def test_select_rounds_rescores_between_rounds():
    calls: list[frozenset[int]] = []

    def score_fn(labelled: frozenset[int]) -> dict[int, float]:
        calls.append(labelled)
        # every score moves up by 0.01 per image labelled so far
        return {i: min(1.0, s + 0.01 * len(labelled)) for i, s in SCORES.items()}

    rounds = select_rounds("closest", score_fn, {1}, plan_rounds(1, 5, 2), beta=0.3)
    assert [len(r) for r in rounds] == [2, 2]
    flat = [i for r in rounds for i in r]
    assert len(set(flat)) == 4 and 1 not in flat
    assert calls[0] == frozenset({1}) and calls[1] == frozenset({1, *rounds[0]})
    # one round of the same size over unchanged scores equals `select`
    one = select_rounds("closest", lambda _: SCORES, {1}, [4], beta=0.3)
    assert one == [select("closest", {k: v for k, v in SCORES.items() if k != 1}, 4, 0.3)]


def test_select_rounds_names_the_failing_round():
    with pytest.raises(ValueError, match="round 2 of 2"):
        select_rounds("random", lambda _: SCORES, set(), [4, 3], rng=np.random.default_rng(0))


def test_rounds_break_ties_by_the_rng_deterministically():
    tied = {i: 0.5 for i in range(30)}

    def run(seed):
        return select_rounds("closest", lambda _: tied, {0, 1}, [3, 3], beta=0.5,
                             rng=np.random.default_rng(seed))

    assert run(7) == run(7)
    assert len({tuple(map(tuple, run(s))) for s in range(6)}) > 1
    for rounds in (run(s) for s in range(6)):
        flat = [i for r in rounds for i in r]
        assert len(set(flat)) == 6 and not {0, 1} & set(flat)
    # without an rng the ties fall to the id: the lowest free ids, in order
    assert select_rounds("closest", lambda _: tied, {0, 1}, [3, 3], beta=0.5) == \
        [[2, 3, 4], [5, 6, 7]]
