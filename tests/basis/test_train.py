from __future__ import annotations

import pytest
import torch

from basis.data import SyntheticConfig, SyntheticShapes
from basis.losses import LossConfig
from basis.models import RSIS, ModelConfig
from basis.train import Hook, TrainConfig, TrainState, train

TIMING = ("seconds", "img_per_s")
DATA = SyntheticShapes(SyntheticConfig(image_size=32), seed=0, ids=range(4))
MODEL = ModelConfig(hidden=16, n_classes=20)


def _fresh_model(cfg: ModelConfig = MODEL) -> RSIS:
    torch.manual_seed(123)
    return RSIS(cfg)


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


class _Stop(Exception):
    pass


class _StopAfter(Hook):
    def __init__(self, n: int) -> None:
        self.n = n
        self.saved: dict | None = None

    def after_epoch(self, state: TrainState, metrics: dict[str, float]) -> None:
        if state.epoch == self.n:
            self.saved = state.state_dict()
            raise _Stop


class _Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_train(self, state):
        self.calls.append("before")

    def after_epoch(self, state, metrics):
        self.calls.append(f"epoch{state.epoch}")

    def after_train(self, state):
        self.calls.append("after")


def test_resume_reproduces_uninterrupted_run():
    cfg = TrainConfig(epochs=1, iou_epochs=1, batch_size=2, seed=5)
    rec = _Recorder()
    full = train(_fresh_model(), DATA, cfg, hooks=[rec])
    assert rec.calls == ["before", "epoch1", "epoch2", "after"]
    assert full.epoch == 2 and len(full.history) == 2

    stopper = _StopAfter(1)
    with pytest.raises(_Stop):
        train(_fresh_model(), DATA, cfg, hooks=[stopper])
    resumed = train(_fresh_model(), DATA, cfg, state=stopper.saved)

    assert resumed.epoch == 2
    assert _strip(resumed.history) == _strip(full.history)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_freeze_schedule_trains_only_the_iou_branch_at_the_end():
    cfg = TrainConfig(epochs=1, iou_epochs=1, batch_size=2)
    stopper = _StopAfter(1)
    with pytest.raises(_Stop):
        train(_fresh_model(), DATA, cfg, hooks=[stopper])
    before = {k: v.clone() for k, v in stopper.saved["model"].items()}
    ts = train(_fresh_model(), DATA, cfg, state=stopper.saved)
    after = ts.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc_iou.weight", "fc_iou.bias"}
    assert ts.history[0]["phase_iou"] == 0.0 and "iou" not in ts.history[0]
    assert ts.history[1]["phase_iou"] == 1.0 and set(ts.history[1]) >= {"iou", "loss"}
    assert all(p.requires_grad for p in ts.model.parameters())


def test_joint_schedule_and_model_without_iou_head():
    ts = train(_fresh_model(), DATA, TrainConfig(epochs=1, iou_schedule="joint", batch_size=4))
    assert ts.epoch == 1 and {"mask", "class", "stop", "iou"} <= set(ts.history[0])
    plain = ModelConfig(hidden=16, weak=False, iou_head=False, max_steps=3)
    ts = train(_fresh_model(plain), DATA, TrainConfig(epochs=1, iou_epochs=2, batch_size=4),
               LossConfig())
    assert ts.epoch == 1  # no IoU-only epochs without an IoU branch


def test_bad_schedule():
    with pytest.raises(ValueError):
        TrainConfig(iou_schedule="later")


def test_iou_phase_targets_are_the_inference_true_ious():
    """The IoU branch is fitted to exactly what `predict` reports as the true IoU, on
    the features `predict`'s forward pass computes (eval mode, class-id order)."""
    from basis.infer import predict
    from basis.train import iou_training_set

    model = _fresh_model()
    train(model, DATA, TrainConfig(epochs=1, iou_epochs=0, batch_size=2))
    items = iou_training_set(model, DATA, batch_size=3)
    preds = predict(model, DATA, batch_size=2)
    assert model.training  # restored
    for (feats, target), p in zip(items, preds):
        assert feats.shape == (len(p.iou_true), model.fc_iou.in_features)
        assert target.tolist() == pytest.approx(p.iou_true)
        assert model.iou_from_features(feats).tolist() == pytest.approx(
            [v ** 0.5 for v in p.iou_pred], abs=1e-5)


def test_iou_phase_fits_the_branch():
    """A few hundred cached steps bring the IoU L1 loss well below its first value."""
    cfg = TrainConfig(epochs=1, iou_epochs=3, iou_passes=40, batch_size=2)
    ts = train(_fresh_model(), DATA, cfg)
    ious = [h["iou"] for h in ts.history if h["phase_iou"] == 1.0]
    assert len(ious) == 3 and ious[-1] < 0.6 * ious[0]


def test_iou_holdout_split_and_training():
    from basis.train import holdout_split

    seg, iou = holdout_split(10, 0.3, seed=1)
    assert len(iou) == 3 and sorted(seg + iou) == list(range(10))
    assert holdout_split(10, 0.3, seed=1) == (seg, iou)
    assert holdout_split(10, 0.0, seed=1) == (list(range(10)), list(range(10)))
    assert holdout_split(2, 0.9, seed=0)[0]  # never leaves segmentation without images
    ts = train(_fresh_model(), DATA, TrainConfig(epochs=1, iou_epochs=1, batch_size=2,
                                                 iou_holdout=0.5))
    assert ts.history[0]["images"] == 2.0  # segmentation saw only its half
    assert ts.history[1]["images"] == 2.0 * TrainConfig().iou_passes
    with pytest.raises(ValueError):
        TrainConfig(iou_holdout=1.0)


def test_optimizer_is_fused_on_cpu():
    from basis.train import make_optimizer

    opt = make_optimizer(_fresh_model(), TrainConfig())
    assert opt.defaults["fused"]
