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


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_reproduces_uninterrupted_run(schedule):
    """Interrupted after epoch 1 of 2 segmentation epochs (mid-schedule), then resumed."""
    cfg = TrainConfig(epochs=2, iou_epochs=1, batch_size=2, seed=5, lr_schedule=schedule)
    rec = _Recorder()
    full = train(_fresh_model(), DATA, cfg, hooks=[rec])
    assert rec.calls == ["before", "epoch1", "epoch2", "epoch3", "after"]
    assert full.epoch == 3 and len(full.history) == 3
    lrs = [h["lr_decoder"] for h in full.history[:2]]
    assert lrs == ([1e-3, 1e-3] if schedule == "constant" else [1e-3, 0.5e-3])

    stopper = _StopAfter(1)
    with pytest.raises(_Stop):
        train(_fresh_model(), DATA, cfg, hooks=[stopper])
    assert stopper.saved["scheduler"]["last_epoch"] == 1
    resumed = train(_fresh_model(), DATA, cfg, state=stopper.saved)

    assert resumed.epoch == 3
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


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_lr_schedules_per_group():
    from basis.train import make_optimizer, make_scheduler

    def run(**kw):
        cfg = TrainConfig(epochs=4, iou_epochs=2, lr_decoder=1.0, lr_encoder=1.0,
                          lr_iou=1.0, **kw)
        opt = make_optimizer(_fresh_model(), cfg)
        sched = make_scheduler(opt, cfg)
        rows = []
        for _ in range(cfg.total_epochs):
            rows.append([g["lr"] for g in opt.param_groups])
            sched.step()
        return rows

    assert run() == [[1.0, 1.0, 1.0]] * 6
    cos = run(lr_schedule="cosine")
    assert [r[1] for r in cos] == pytest.approx([1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0],
                                                abs=1e-6)
    assert [r[0] for r in cos] == [r[1] for r in cos]
    assert [r[2] for r in cos][4:] == pytest.approx([1.0, 0.5])  # IoU phase: own clock
    poly = run(lr_schedule="poly", iou_schedule="joint")
    assert [r[1] for r in poly][:4] == pytest.approx([(1 - e / 4) ** 0.9 for e in range(4)])
    assert [r[2] for r in poly][:4] == [r[1] for r in poly][:4]
    with pytest.raises(ValueError):
        TrainConfig(lr_schedule="step")


def test_checkpoint_without_scheduler_still_loads():
    """A state dict from before the scheduler existed resumes with constant rates."""
    cfg = TrainConfig(epochs=2, iou_epochs=0, batch_size=4)
    stopper = _StopAfter(1)
    with pytest.raises(_Stop):
        train(_fresh_model(), DATA, cfg, hooks=[stopper])
    old = {k: v for k, v in stopper.saved.items() if k not in ("scheduler", "scaler")}
    assert train(_fresh_model(), DATA, cfg, state=old).epoch == 2


def test_amp_and_channels_last_config():
    for amp in ("none", "bf16", "fp16"):
        assert TrainConfig(amp=amp).amp == amp
    with pytest.raises(ValueError):
        TrainConfig(amp="fp8")
    assert TrainConfig().amp == "none" and TrainConfig().channels_last is False


def test_amp_and_channels_last_are_no_ops_on_cpu():
    """On the CPU amp and channels_last are ignored: bit-identical to plain fp32."""
    from basis.infer import predict

    base = TrainConfig(epochs=1, iou_epochs=1, batch_size=2, seed=3)
    ref = train(_fresh_model(), DATA, base)
    ref_preds = predict(ref.model, DATA)
    for amp in ("bf16", "fp16"):
        cfg = TrainConfig(epochs=1, iou_epochs=1, batch_size=2, seed=3, amp=amp,
                          channels_last=True)
        ts = train(_fresh_model(), DATA, cfg)
        assert ts.scaler is None and ts.state_dict()["scaler"] is None
        for k, v in ref.model.state_dict().items():
            assert torch.equal(v, ts.model.state_dict()[k]), (amp, k)
            assert v.is_contiguous()
        preds = predict(ts.model, DATA, amp=amp, channels_last=True)
        assert [p.iou_pred for p in preds] == [p.iou_pred for p in ref_preds]
        assert [p.rles for p in preds] == [p.rles for p in ref_preds]
    with pytest.raises(ValueError):
        predict(ref.model, DATA, amp="fp8")


def test_freeze_bn_keeps_running_statistics():
    cfg = TrainConfig(epochs=1, iou_epochs=0, batch_size=2, freeze_bn=True)
    model = _fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    ts = train(model, DATA, cfg)
    after = ts.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(_fresh_model().skips[0][1].weight, ts.model.skips[0][1].weight)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_and_channels_last_on_cuda(amp):
    from basis.infer import predict

    cfg = TrainConfig(epochs=2, iou_epochs=1, batch_size=2, amp=amp, channels_last=True,
                      grad_clip=1.0)
    ts = train(_fresh_model(), DATA, cfg, device="cuda")
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in ts.history)
    assert (ts.scaler is not None) == (amp == "fp16")
    assert ts.model.skips[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    sd = ts.state_dict()
    assert (sd["scaler"] is not None) == (amp == "fp16")
    preds = predict(ts.model, DATA, device="cuda", amp=amp, channels_last=True)
    assert [len(p.labels) for p in preds] == [s.n_objects for s in DATA]
    assert all(0.0 <= x <= 1.0 for p in preds for x in p.iou_pred + p.iou_true)
    # resumes from its own checkpoint
    assert train(_fresh_model(), DATA, cfg, device="cuda", state=sd).epoch == 3
