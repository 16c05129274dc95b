"""Acceptance (issue 4): W-RSIS overfits a handful of synthetic images on the CPU.

The images hold one class each (one or two instances): W-RSIS is trained on its class
sequence in area order and run at inference in class-id order (`basis.infer`), and the
two orders agree only when an image's classes do. On an image with two classes whose
area and id orders differ, an overfitted model sees at inference a sequence it was
never trained on (measured: that image's two IoUs drop to ~0.5 and 0.0 while the others
stay > 0.95); generalising over orders needs more than a handful of images.
"""
from __future__ import annotations

import time

import pytest

from basis.data import SyntheticConfig, SyntheticShapes
from basis.infer import predict
from basis.models import RSIS, ModelConfig
from basis.train import Hook, TrainConfig, TrainState, train

BAR = 0.8
EASY = SyntheticConfig(image_size=32, n_classes=4, mean_objects=1.5, max_objects=2,
                       mean_classes=1.0, min_size=0.2, max_size=0.4,
                       allow_occlusion=False, noise_range=(0.02, 0.03))


def _mean_iou(preds) -> float:
    ious = [v for p in preds for v in p.iou_true]
    return sum(ious) / len(ious)


class _StopAtBar(Hook):
    """Every ``every`` epochs, predict the training images; stop once above the bar."""

    def __init__(self, data, every: int = 10) -> None:
        self.data, self.every, self.trace = data, every, []

    def after_epoch(self, state: TrainState, metrics: dict[str, float]) -> None:
        if state.epoch % self.every == 0:
            self.trace.append((state.epoch, _mean_iou(predict(state.model, self.data))))
            if self.trace[-1][1] > BAR:
                raise _Reached


class _Reached(Exception):
    pass


@pytest.mark.slow
def test_wrsis_overfits_a_handful_of_images():
    data = SyntheticShapes(EASY, seed=2, ids=range(3))
    assert sorted(s.n_objects for s in data) == [1, 2, 2]
    model = RSIS(ModelConfig(hidden=32, n_classes=4, iou_head=False), seed=0)
    # One step per epoch on all three images; 1e-2 for the randomly initialised
    # encoder and the decoder alike (1e-3 needs ~5× the steps: soft-IoU 0.78 after 150).
    cfg = TrainConfig(epochs=250, batch_size=3, lr_decoder=1e-2, lr_encoder=1e-2, seed=0)
    hook = _StopAtBar(data)
    t0 = time.perf_counter()
    try:
        train(model, data, cfg, hooks=[hook])
    except _Reached:
        pass
    seconds = time.perf_counter() - t0

    preds = predict(model, data)
    assert _mean_iou(preds) > BAR, hook.trace
    for p, s in zip(preds, data):  # exactly the weak labels: classes and counts
        assert sorted(p.labels) == sorted(s.labels.tolist())
        assert len(p.rles) == len(p.iou_true) == s.n_objects
    assert seconds < 60, (seconds, hook.trace)
