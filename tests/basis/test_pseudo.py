import torch

from basis.data.pseudo import Concat, PseudoLabelled, decode
from basis.data.splits import synthetic_additional
from basis.data.synthetic import SyntheticConfig
from basis.infer import encode_rles
from basis.types import ImagePrediction


def _pred(image_id, masks, labels, h=32, w=32):
    return ImagePrediction(image_id=image_id, height=h, width=w, rles=encode_rles(masks),
                           labels=labels, scores=[1.0] * len(labels),
                           iou_pred=[0.5] * len(labels))


def test_pseudo_labels_replace_ground_truth_and_skip_empty_images():
    cfg = SyntheticConfig(image_size=32, n_classes=3)
    extra = synthetic_additional(cfg, 0, 3)
    m = torch.zeros(2, 32, 32, dtype=torch.bool)
    m[0, :4, :4] = True                       # the second mask stays empty → dropped
    preds = [_pred(extra.ids[0], m, [2, 3]),
             _pred(extra.ids[1], torch.zeros(1, 32, 32, dtype=torch.bool), [1])]
    data = PseudoLabelled(extra, preds)
    assert data.ids == [extra.ids[0]]          # image 1 has only an empty mask; 2 no prediction
    s = data[0]
    assert s.masks.shape == (1, 32, 32) and s.masks[0].sum() == 16 and s.labels.tolist() == [2]
    assert torch.equal(s.image, extra[0].image) and not s.ignore.any()
    masks, labels = decode(preds[0])
    assert masks.shape[0] == 1 and labels.tolist() == [2]
    both = Concat([extra.subset(extra.ids[1:]), data])
    assert len(both) == 3 and both.ids[-1] == extra.ids[0]
    assert both[2].labels.tolist() == [2]
