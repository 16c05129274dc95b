"""Joint transforms keep the image, the masks and the ignore region aligned."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from basis.data import (
    DropEmpty,
    SampleTransform,
    SyntheticConfig,
    SyntheticShapes,
    collate,
    eval_transform,
    train_transform,
)
from basis.data.transforms import hflip, resize
from basis.types import Sample


def _sample(h: int = 32, w: int = 48) -> Sample:
    """An L-shaped instance top-left (class 3), a small block bottom-right (class 5); the
    image's red channel is 1 exactly on the instances, so alignment is checkable."""
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 2:14, 2:6] = True
    masks[0, 10:14, 6:16] = True
    masks[1, 26:30, 40:46] = True
    ignore = torch.zeros(h, w, dtype=torch.bool)
    ignore[0, :10] = True
    image = torch.full((3, h, w), 0.2)
    image[0] = masks.any(0).float()
    return Sample(image=image, masks=masks, labels=torch.tensor([3, 5]), ignore=ignore,
                  image_id=11)


def test_flip_moves_masks_ignore_and_image_together():
    s = _sample()
    f = hflip(p=1.0)(s)
    assert torch.equal(f.masks, s.masks.flip(-1))
    assert torch.equal(f.ignore, s.ignore.flip(-1))
    assert torch.equal(f.image, s.image.flip(-1))
    assert f.masks[0, 12, -16:-6].all() and not f.masks[0, 12, 6:16].any()  # the L's foot
    assert f.labels.tolist() == [3, 5] and f.image_id == 11


def test_resize_to_training_size():
    r = resize(64)(_sample())
    assert r.image.shape == (3, 64, 64) and r.masks.shape == (2, 64, 64)
    assert r.masks.dtype == torch.bool and r.ignore.dtype == torch.bool
    assert r.ignore.shape == (64, 64) and r.ignore[0].any()
    agree = (r.image[0] > 0.5) == r.masks.any(0)
    assert agree.float().mean() > 0.97  # only edge pixels differ (bilinear vs nearest)
    assert type(r.image) is torch.Tensor and type(r.masks) is torch.Tensor


def test_crop_drops_emptied_instances_with_their_labels():
    s = _sample()
    c = SampleTransform([v2.CenterCrop((16, 16))])(s)
    # rows 8..23, cols 16..31: the block (rows 26+) and the L (cols < 16) are gone
    assert c.masks.shape == (0, 16, 16) and c.labels.shape == (0,)
    c = SampleTransform([v2.RandomCrop((20, 20))], min_pixels=1)
    torch.manual_seed(0)
    for _ in range(10):
        out = c(s)
        assert out.masks.shape[0] == out.labels.shape[0]
        assert (out.masks.flatten(1).sum(1) > 0).all()
    d = DropEmpty(min_pixels=30)(s)
    assert d.labels.tolist() == [3]  # the 24-pixel block is below 30


def test_train_transform_keeps_alignment():
    s = _sample()
    t = train_transform(32, scale=(0.3, 1.0))
    torch.manual_seed(1)
    for _ in range(20):
        out = t(s)
        assert out.image.shape == (3, 32, 32) and out.ignore.shape == (32, 32)
        assert out.masks.shape[0] == out.labels.shape[0]
        union = out.masks.any(0)
        agree = (out.image[0] > 0.5) == union
        assert agree.float().mean() > 0.9


def test_dataset_transform_and_collate_with_variable_counts():
    ds = SyntheticShapes(SyntheticConfig(image_size=32), 0, range(6),
                         transform=train_transform(24, scale=(0.2, 0.5)))
    assert ds.subset([1, 2]).transform is ds.transform
    torch.manual_seed(0)
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate)))
    assert batch["images"].shape == (6, 3, 24, 24)
    assert all(m.shape[1:] == (24, 24) for m in batch["masks"])
    assert [m.shape[0] for m in batch["masks"]] == [len(lab) for lab in batch["labels"]]
    assert ds.load(0).image.shape == (3, 32, 32)  # load() and stats() are untransformed
    assert ds.stats(0).height == 32
    assert eval_transform(24)(ds.load(0)).image.shape == (3, 24, 24)
