from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from basis.data import SyntheticConfig, SyntheticShapes, collate, synthetic_splits
from basis.data.splits import TEST_ID_OFFSET

CFG = SyntheticConfig(image_size=32)


def test_items_are_determined_by_seed_and_id():
    a = SyntheticShapes(CFG, seed=3, ids=[5, 7, 9])
    b = SyntheticShapes(CFG, seed=3, ids=[9, 5])
    for x, y in ((a[0], b[1]), (a[2], b[0])):
        assert x.image_id == y.image_id
        assert torch.equal(x.image, y.image)
        assert torch.equal(x.masks, y.masks)
        assert torch.equal(x.labels, y.labels)
        assert torch.equal(x.ignore, y.ignore)
    other_seed = SyntheticShapes(CFG, seed=4, ids=[5])[0]
    assert not torch.equal(a[0].image, other_seed.image)


def test_sample_types_and_no_empty_masks():
    ds = SyntheticShapes(CFG, seed=0, ids=range(40))
    for s in ds:
        k = s.n_objects
        assert 1 <= k <= CFG.max_objects
        assert s.image.shape == (3, 32, 32) and s.image.dtype == torch.float32
        assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
        assert s.masks.shape == (k, 32, 32) and s.masks.dtype == torch.bool
        assert s.labels.shape == (k,) and s.labels.dtype == torch.int64
        assert int(s.labels.min()) >= 1 and int(s.labels.max()) <= CFG.n_classes
        assert s.ignore.shape == (32, 32) and s.ignore.dtype == torch.bool
        assert (s.masks.flatten(1).sum(1) >= CFG.min_visible).all()
        # instances are the visible parts: they never overlap
        assert int(s.masks.sum(0).max()) <= 1


def test_statistics_near_config():
    ds = SyntheticShapes(SyntheticConfig(image_size=32), seed=1, ids=range(200))
    samples = list(ds)
    n_obj = np.array([s.n_objects for s in samples])
    n_cls = np.array([len(s.weak) for s in samples])
    assert abs(n_obj.mean() - 2.8) < 0.35
    assert abs(n_cls.mean() - 1.5) < 0.25
    # a wide easy/hard spread: single-object and crowded images, big and small objects
    assert (n_obj == 1).mean() > 0.08 and (n_obj >= 5).mean() > 0.04
    areas = np.array([s.mean_object_area for s in samples])
    assert areas.min() < 0.04 and areas.max() > 0.2


def test_ignore_band_is_configurable():
    with_band = SyntheticShapes(CFG, seed=0, ids=[1])[0]
    without = SyntheticShapes(SyntheticConfig(image_size=32, ignore_band=0), seed=0, ids=[1])[0]
    assert with_band.ignore.any() and not without.ignore.any()
    assert torch.equal(with_band.masks, without.masks)
    # the band lies on object boundaries: every instance touches it
    for m in with_band.masks:
        assert (m & with_band.ignore).any()


def test_no_occlusion_option_gives_whole_shapes():
    ds = SyntheticShapes(SyntheticConfig(image_size=32, allow_occlusion=False), seed=0,
                         ids=range(10))
    assert sum(s.n_objects for s in ds) >= 10


def test_collate():
    ds = SyntheticShapes(CFG, seed=0, ids=range(3))
    batch = collate([ds[i] for i in range(3)])
    assert batch["images"].shape == (3, 3, 32, 32)
    assert batch["image_ids"] == [0, 1, 2]
    assert [m.shape[0] for m in batch["masks"]] == [ds[i].n_objects for i in range(3)]
    assert len(batch["labels"]) == len(batch["ignore"]) == 3


def test_splits_are_disjoint_and_subset_keeps_items():
    pool, test = synthetic_splits(CFG, data_seed=2, n_pool=5, n_test=3)
    assert pool.ids == list(range(5))
    assert test.ids == [TEST_ID_OFFSET, TEST_ID_OFFSET + 1, TEST_ID_OFFSET + 2]
    sub = pool.subset([4, 1])
    assert len(sub) == 2 and sub[0].image_id == 4
    assert torch.equal(sub[1].image, pool[1].image)
    with pytest.raises(ValueError):
        synthetic_splits(CFG, 0, TEST_ID_OFFSET + 1, 1)


def _digest(cfg: SyntheticConfig, seed: int, ids: list[int]) -> str:
    h = hashlib.sha256()
    for s in SyntheticShapes(cfg, seed, ids):
        for t in (s.image, s.masks, s.labels, s.ignore):
            h.update(t.numpy().tobytes())
    return h.hexdigest()


# sha256 over image, masks, labels and ignore bytes of these items, computed with the
# generator as it was before `version` existed (commit 038e08e, basis/data/synthetic.py
# unmodified). A changed digest means old sweeps no longer reproduce bit for bit.
V1_DIGESTS = [
    (SyntheticConfig(image_size=32), 0, [0, 1, 2, 3, 7, 1_000_000, 2_000_005],
     "2609464fcd66a3c461149da5048db14a96c4b9c3aaf150c53b6e8b1cdd51f61e"),
    (SyntheticConfig(), 3, [0, 1, 2, 3, 7, 1_000_000, 2_000_005],
     "c6c1474e9dfb06e20d8a0442748ec6a299e48e0112cb65a5f07f9429409a45b0"),
    (SyntheticConfig(image_size=128), 1, [0, 1, 2],
     "f081d6ab594e6ec7232cdc5cb8bcb48dcdf8a69e36c97280a1b58d2185c594bc"),
]


@pytest.mark.parametrize("cfg,seed,ids,expected", V1_DIGESTS)
def test_default_generator_is_unchanged(cfg, seed, ids, expected):
    assert cfg.version == 1
    assert _digest(cfg, seed, ids) == expected
    # the version-2 fields do not touch version 1
    odd = SyntheticConfig(**{**cfg.__dict__, "clutter": 0.0, "void_width": 0.1,
                             "difficulty_range": (0.5, 0.5)})
    assert _digest(odd, seed, ids[:2]) == _digest(cfg, seed, ids[:2])
