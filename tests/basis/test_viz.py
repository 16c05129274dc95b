"""The Fig. 7-style qualitative picture (`basis.viz`)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from basis.data import SyntheticConfig, SyntheticShapes
from basis.infer import predict
from basis.models import RSIS, ModelConfig
from basis.viz import match_colours, qualitative, save_qualitative

SIZE, SCALE, N = 32, 2, 3
DATA = SyntheticShapes(SyntheticConfig(image_size=SIZE), seed=3, ids=range(4))


@pytest.fixture(scope="module")
def preds():
    torch.manual_seed(0)
    return predict(RSIS(ModelConfig(hidden=16)), DATA, batch_size=4)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_grid_size_mode_and_columns(preds):
    img = qualitative(DATA, preds, n=N, scale=SCALE)
    cell = SIZE * SCALE
    assert img.mode == "RGB" and img.size == (3 * cell, N * cell)
    arr = np.asarray(img).astype(int)
    for r in range(N):
        s = DATA[r]
        # object pixels away from the void band, the text corner and the separators
        obj = (s.masks.any(0) & ~s.ignore).numpy()
        obj[:7, :14] = False  # the "id" label of the image column
        obj[:, 0] = obj[0, :] = False
        ys, xs = np.nonzero(obj.repeat(SCALE, 0).repeat(SCALE, 1))
        assert ys.size, "test data: every row should show an object"
        raw = arr[r * cell + ys, xs]
        gt = arr[r * cell + ys, cell + xs]
        assert np.abs(raw - gt).sum(-1).mean() > 10  # the overlay changed them
        # void pixels are grey in the ground-truth column
        vy, vx = np.nonzero(s.ignore.numpy()[1:, 1:])
        assert (arr[r * cell + (vy + 1) * SCALE, cell + (vx + 1) * SCALE] == 128).all()


def test_deterministic_png(preds, tmp_path):
    a = _png(qualitative(DATA, preds, n=N, scale=SCALE))
    b = _png(qualitative(DATA, list(reversed(preds)), n=N, scale=SCALE))  # matched by id
    assert a == b
    out = save_qualitative(tmp_path / "sub" / "qualitative.png",
                           qualitative(DATA, preds, n=N, scale=SCALE))
    assert out.read_bytes() == a
    assert [p.name for p in out.parent.iterdir()] == ["qualitative.png"]  # no temp left


def test_missing_prediction_and_small_n(preds):
    img = qualitative(DATA, preds[1:], n=10, scale=1)
    assert img.size == (3 * SIZE, len(DATA) * SIZE)
    with pytest.raises(ValueError):
        qualitative(DATA, preds, n=0)


def test_match_colours_follow_the_ground_truth():
    gt = np.zeros((2, 4, 4), bool)
    gt[0, :2], gt[1, 2:] = True, True
    pred = np.stack([gt[1], gt[0], np.zeros((4, 4), bool)])
    assert match_colours(pred, gt) == [1, 0, 2]
