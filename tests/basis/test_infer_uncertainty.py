"""The uncertainties and pooled features `predict` computes for the acquisition baselines."""
from __future__ import annotations

import math

import torch

from basis.data import SyntheticConfig, SyntheticShapes
from basis.infer import predict, weak_class_sequence
from basis.models import RSIS, ModelConfig
from basis.selection import UNCERTAINTIES

C = 4
DATA = SyntheticShapes(SyntheticConfig(image_size=32, n_classes=C), seed=1, ids=range(3))


def _in_range(extras: dict[str, float]) -> None:
    assert set(extras) == set(UNCERTAINTIES)
    assert all(math.isfinite(v) for v in extras.values())
    assert 0.0 <= extras["entropy"] <= math.log(C) + 1e-6
    assert 0.0 <= extras["least_confidence"] <= 1.0 - 1.0 / C + 1e-6
    assert 0.0 <= extras["mask_entropy"] <= math.log(2) + 1e-6


def test_wrsis_uncertainties_are_in_range_and_match_the_model_output():
    model = RSIS(ModelConfig(hidden=16, n_classes=C), seed=0)
    preds = predict(model, DATA, batch_size=2, with_features=True)
    for p in preds:
        _in_range(p.extras)
        assert p.features is not None and len(p.features) == 512   # resnet18 layer4
    s = DATA[0]
    k = s.n_objects
    assert k >= 1
    with torch.no_grad():
        images = s.image[None]
        out = model.eval()(images, weak_class_sequence([s.labels]))
        prob = torch.softmax(out.class_logits[0, :k, 1:], -1)             # (k, C)
        entropy = -(prob * prob.log()).sum(-1).mean()
        least = (1 - prob.max(-1).values).mean()
        q = torch.sigmoid(out.mask_logits[0, :k])                          # (k, H, W)
        mask_h = -(q * q.log() + (1 - q) * (1 - q).log()).mean()
        enc = model.encoder((images - model.mean) / model.std)[-1].mean((2, 3))[0]
    got = preds[0].extras
    assert math.isclose(got["entropy"], float(entropy), rel_tol=1e-4, abs_tol=1e-5)
    assert math.isclose(got["least_confidence"], float(least), rel_tol=1e-4, abs_tol=1e-5)
    assert math.isclose(got["mask_entropy"], float(mask_h), rel_tol=1e-4, abs_tol=1e-5)
    assert torch.allclose(torch.tensor(preds[0].features), enc, atol=1e-5)


def test_plain_rsis_uncertainties_are_in_range_under_both_rules():
    model = RSIS(ModelConfig(hidden=16, n_classes=C, weak=False, max_steps=3), seed=0)
    for rule in ("rsis", "first_stop"):
        preds = predict(model, DATA, batch_size=3, inference=rule, min_area=0.0,
                        stop_th=0.0)
        for p in preds:
            _in_range(p.extras)
            assert p.features is None            # only on request
