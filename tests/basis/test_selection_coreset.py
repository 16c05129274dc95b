"""k-center greedy core-set selection (Sener & Savarese 2018)."""
from __future__ import annotations

import numpy as np
import pytest

from basis.selection import k_center_greedy

#: id → 2-D point; id 0 is the initial centre at the origin.
POINTS = {0: (0.0, 0.0), 1: (1.0, 0.0), 2: (0.0, 2.0), 3: (5.0, 5.0), 4: (5.0, 4.0),
          5: (-3.0, 0.0)}


def _xy(points=POINTS):
    ids = list(points)
    return np.array([points[i] for i in ids]), ids


def test_farthest_point_first_then_farthest_from_every_centre():
    x, ids = _xy()
    chosen = k_center_greedy(x, ids, [0], 3, np.random.default_rng(0))
    # (5, 5) is farthest from the origin; then (-3, 0) (3 from the origin, far from
    # (5, 5)) beats (0, 2) (2 from the origin); then (0, 2), at 2 from the origin
    assert chosen == [3, 5, 2]


def test_never_picks_an_initial_image_and_exhausts_the_pool():
    x, ids = _xy()
    chosen = k_center_greedy(x, ids, [0, 3], 4, np.random.default_rng(1))
    assert sorted(chosen) == [1, 2, 4, 5] and not {0, 3} & set(chosen)


def test_ties_are_broken_by_the_seeded_rng_deterministically():
    pts = {0: (0.0, 0.0), 1: (1.0, 0.0), 2: (-1.0, 0.0), 3: (0.0, 1.0), 4: (0.0, -1.0)}
    x, ids = _xy(pts)
    runs = {tuple(k_center_greedy(x, ids, [0], 1, np.random.default_rng(s))) for s in range(12)}
    assert len(runs) > 1                                          # the seed decides
    assert k_center_greedy(x, ids, [0], 2, np.random.default_rng(5)) == \
        k_center_greedy(x, ids, [0], 2, np.random.default_rng(5))
    assert k_center_greedy(x, ids, [0], 1) == [1]                  # no rng: by id


def test_row_order_does_not_matter():
    x, ids = _xy()
    perm = [4, 2, 0, 5, 1, 3]
    a = k_center_greedy(x, ids, [0], 3, np.random.default_rng(0))
    b = k_center_greedy(x[perm], [ids[i] for i in perm], [0], 3, np.random.default_rng(0))
    assert a == b


@pytest.mark.parametrize("kwargs,match", [
    ({"n": 6}, "n must be"),
    ({"features": np.zeros((3, 2))}, "features must be"),
    ({"features": np.full((6, 2), np.nan)}, "finite"),
])
def test_bad_arguments_are_named(kwargs, match):
    x, ids = _xy()
    args = {"features": x, "ids": ids, "centres": [0], "n": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        k_center_greedy(**args)
