"""Pool/test splits of the synthetic data with disjoint image ids."""
from __future__ import annotations

from basis.data.synthetic import SyntheticConfig, SyntheticShapes

TEST_ID_OFFSET = 1_000_000


def synthetic_splits(cfg: SyntheticConfig, data_seed: int, n_pool: int,
                     n_test: int) -> tuple[SyntheticShapes, SyntheticShapes]:
    """The training pool (ids 0..n_pool-1) and the test set (ids from 1_000_000).

    Both share ``data_seed``; the id ranges never overlap, so no test image is in the pool.
    """
    if n_pool > TEST_ID_OFFSET:
        raise ValueError(f"n_pool={n_pool} would reach the test ids at {TEST_ID_OFFSET}")
    pool = SyntheticShapes(cfg, data_seed, range(n_pool))
    test = SyntheticShapes(cfg, data_seed, range(TEST_ID_OFFSET, TEST_ID_OFFSET + n_test))
    return pool, test
