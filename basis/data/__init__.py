"""Datasets and batching for the method."""
from basis.data.splits import TEST_ID_OFFSET, synthetic_splits
from basis.data.synthetic import SyntheticConfig, SyntheticShapes, collate

__all__ = ["SyntheticConfig", "SyntheticShapes", "collate", "synthetic_splits", "TEST_ID_OFFSET"]
