import pytest
import torch

from basis.data.pseudo import EMPTY_POLICIES, Concat, PseudoLabelled, decode
from basis.data.splits import synthetic_additional
from basis.data.synthetic import SyntheticConfig
from basis.infer import encode_rles
from basis.types import ImagePrediction

S = 32


def _pred(image_id, masks, labels, h=S, w=S, scores=None, steps=None):
    return ImagePrediction(image_id=image_id, height=h, width=w, rles=encode_rles(masks),
                           labels=labels, scores=scores or [1.0] * len(labels),
                           iou_pred=[0.5] * len(labels), steps=steps)


def _masks(*boxes):
    m = torch.zeros(len(boxes), S, S, dtype=torch.bool)
    for k, box in enumerate(boxes):
        if box is not None:
            y0, y1, x0, x1 = box
            m[k, y0:y1, x0:x1] = True
    return m


@pytest.fixture()
def extra():
    return synthetic_additional(SyntheticConfig(image_size=S, n_classes=3), 0, 4)


@pytest.fixture()
def preds(extra):
    return [_pred(extra.ids[0], _masks((0, 4, 0, 4), None), [2, 3]),     # one empty of two
            _pred(extra.ids[1], _masks(None), [1]),                       # its only one empty
            _pred(extra.ids[2], _masks((2, 6, 2, 8), (10, 12, 0, 32)), [1, 1])]  # whole
    # extra.ids[3]: no prediction


def test_default_drops_images_with_an_empty_pseudo_mask_and_says_why(extra, preds):
    data = PseudoLabelled(extra, preds)
    assert data.empty == "drop_image" == EMPTY_POLICIES[0]
    assert data.ids == [extra.ids[2]]
    assert data.counts == {"images": 4, "kept": 1, "kept_with_lost_object": 0,
                           "left_out": 3, "empty_masks": 2}
    assert set(data.reasons) == {extra.ids[0], extra.ids[1], extra.ids[3]}
    assert data.reasons[extra.ids[0]] == "left out: 1 of 2 pseudo-masks empty (classes [3])"
    assert data.reasons[extra.ids[3]] == "left out: no prediction"
    assert "3 left out" in data.summary() and "'drop_image'" in data.summary()
    s = data[0]
    assert s.labels.tolist() == [1, 1] and s.masks.flatten(1).sum(1).tolist() == [24, 64]
    # every given image is accounted for: kept, or left out with a reason
    assert set(data.ids) | set(data.reasons) == set(extra.ids)


def test_drop_object_keeps_the_image_and_records_the_loss(extra, preds):
    data = PseudoLabelled(extra, preds, empty="drop_object")
    assert data.ids == [extra.ids[0], extra.ids[2]]   # image 1 lost its only object
    assert data.counts == {"images": 4, "kept": 2, "kept_with_lost_object": 1,
                           "left_out": 2, "empty_masks": 2}
    assert data.reasons[extra.ids[0]] == ("kept with 1 of 2 objects: 1 of 2 pseudo-masks "
                                          "empty (classes [3])")
    assert data.reasons[extra.ids[1]].startswith("left out: 1 of 1 pseudo-masks empty")
    s = data[0]
    assert s.masks.shape == (1, S, S) and s.masks[0].sum() == 16 and s.labels.tolist() == [2]
    assert torch.equal(s.image, extra[0].image) and not s.ignore.any()
    both = Concat([extra.subset(extra.ids[1:]), data])
    assert len(both) == 5 and both.ids[-1] == extra.ids[2]
    assert both[3].labels.tolist() == [2]
    with pytest.raises(ValueError, match="empty="):
        PseudoLabelled(extra, preds, empty="keep")


def test_decode_and_one_object_per_mask(extra):
    m = _masks((0, 4, 0, 4), (0, 4, 0, 4), (8, 9, 8, 9))
    # an RSIS-faithful prediction: the first mask under two classes
    p = _pred(extra.ids[0], m, [2, 3, 1], scores=[0.3, 0.6, 0.9], steps=[0, 0, 4])
    masks, labels = decode(p)
    assert masks.shape[0] == 3 and labels.tolist() == [2, 3, 1]
    masks, labels = decode(p, indices=p.primary())
    assert labels.tolist() == [3, 1]
    data = PseudoLabelled(extra.subset(extra.ids[:1]), [p])
    assert data.ids == [extra.ids[0]] and data.reasons == {}
    assert data[0].labels.tolist() == [3, 1]
    empty = _pred(extra.ids[0], _masks(None), [1])
    assert decode(empty)[0].shape == (0, S, S)
    assert decode(empty, min_pixels=0)[0].shape == (1, S, S)
