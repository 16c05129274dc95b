"""The study's splits: synthetic pool/test with disjoint ids, and the paper's VOC+SBD splits."""
from __future__ import annotations

from pathlib import Path

from basis.data.base import InstanceDataset
from basis.data.sbd import SBDInstances, find_sbd_root
from basis.data.synthetic import SyntheticConfig, SyntheticShapes
from basis.data.voc import VOCInstances, find_voc_root, read_split

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


def paper_splits(voc_root: str | Path, sbd_root: str | Path) -> dict[str, InstanceDataset]:
    """The paper's splits of VOC 2012 + SBD (section 3).

    Returns:
        ``strong``: VOC12 ``train`` (the strongly labelled pool; 1464 images in the real
        release), ``additional``: SBD ``train`` ∪ ``val`` minus VOC12 ``train`` ∪ ``val``
        (the additional pool; 9118 with the real data), ``test``: VOC12 ``val`` (1449).
        The sizes are whatever the files give; use `describe_splits` to report them.
        Images are matched across the datasets by file name, so a VOC image and its SBD
        copy have the same image id and never land in two splits.
    """
    voc = find_voc_root(voc_root)
    sbd = find_sbd_root(sbd_root)
    strong = VOCInstances(voc, "train")
    test = VOCInstances(voc, "val")
    taken = set(strong.names) | set(test.names)
    sbd_names = list(dict.fromkeys(read_split(sbd / "train.txt") + read_split(sbd / "val.txt")))
    additional = SBDInstances(sbd, names=[n for n in sbd_names if n not in taken])
    return {"strong": strong, "additional": additional, "test": test}


def describe_splits(splits: dict[str, InstanceDataset]) -> str:
    """One line per split with its size, e.g. ``strong: 1464 images``."""
    return "\n".join(f"{k}: {len(v)} images" for k, v in splits.items())


__all__ = ["TEST_ID_OFFSET", "ADDITIONAL_ID_OFFSET", "synthetic_splits", "synthetic_additional",
           "paper_splits", "describe_splits"]


ADDITIONAL_ID_OFFSET = 2_000_000


def synthetic_additional(cfg: SyntheticConfig, data_seed: int, n: int) -> SyntheticShapes:
    """The additional (weakly labelled) pool that the annotation network pseudo-labels,
    ids from 2_000_000 (SBD's 9118 images in the paper's setting)."""
    return SyntheticShapes(cfg, data_seed, range(ADDITIONAL_ID_OFFSET, ADDITIONAL_ID_OFFSET + n))
