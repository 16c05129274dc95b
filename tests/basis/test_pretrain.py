"""The encoder pretraining stage's method part (`basis.pretrain`)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from basis.data import SyntheticConfig, SyntheticShapes, synthetic_splits
from basis.data.splits import ADDITIONAL_ID_OFFSET, TEST_ID_OFFSET, synthetic_additional
from basis.models import RSIS, ModelConfig
from basis.pretrain import (
    PRETRAIN_ID_OFFSET,
    PretrainConfig,
    PretrainState,
    pretrain_data,
    pretrain_encoder,
    save_encoder,
)
from basis.train import Hook

TIMING = ("seconds", "img_per_s")
SYN = SyntheticConfig(image_size=32, version=2, n_classes=3)
MODEL = ModelConfig(hidden=16, n_classes=3)


def _cfg(**kw) -> PretrainConfig:
    base = dict(n_images=16, epochs=2, batch_size=8, lr=2e-3, warmup_steps=1, seed=4)
    base.update(kw)
    return PretrainConfig(**base)


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


class _Stop(Exception):
    pass


class _StopAfter(Hook):
    def __init__(self, n: int) -> None:
        self.n = n
        self.saved: dict | None = None

    def after_epoch(self, state, metrics):
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


def test_pretraining_fits_its_own_task():
    """Class presence on 3 classes: loss down, F1 up and well above chance."""
    cfg = _cfg(n_images=24, epochs=10, lr=3e-3, flip=False)
    res = pretrain_encoder(MODEL, pretrain_data(SYN, cfg), cfg)
    first, last = res.history[0], res.history[-1]
    assert len(res.history) == 10
    assert last["loss"] < 0.6 * first["loss"], [h["loss"] for h in res.history]
    assert last["f1"] > first["f1"]
    # eval mode (running BatchNorm statistics), as the encoder is used downstream
    assert res.metrics["eval_f1"] > 0.8, res.metrics


@pytest.mark.parametrize("task, channels", [("multilabel+fg", 1), ("multilabel+seg", 4)])
def test_dense_tasks_train_their_head(task, channels):
    cfg = _cfg(task=task, epochs=1)
    res = pretrain_encoder(MODEL, pretrain_data(SYN, cfg), cfg)
    assert res.state.model.fg is not None and res.state.model.fg.out_channels == channels
    assert res.history[0]["loss"] == pytest.approx(res.history[0]["bce"]
                                                   + res.history[0]["fg"], rel=1e-6)
    assert res.history[0]["fg"] > 0


def test_saved_encoder_loads_into_rsis(tmp_path):
    cfg = _cfg(epochs=1)
    res = pretrain_encoder(MODEL, pretrain_data(SYN, cfg), cfg)
    path = str(tmp_path / "encoder.pt")
    payload = save_encoder(res)
    torch.save(payload, path)
    loaded = RSIS(ModelConfig(hidden=16, n_classes=3, encoder_weights=path)).encoder.state_dict()
    fresh = RSIS(MODEL).encoder.state_dict()
    trained = res.state.model.encoder.state_dict()
    assert loaded.keys() == res.encoder_state.keys() == trained.keys()
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained)
    for k in loaded:
        assert torch.equal(loaded[k], res.encoder_state[k]), k
        assert torch.equal(loaded[k], trained[k]), k
    assert payload["pretrain"]["config"]["task"] == "multilabel"
    # the state (a job's checkpoint) and its state dict give the same file content
    for obj in (res.state, res.state.state_dict(), res.encoder_state):
        other = save_encoder(obj)["encoder"]
        assert all(torch.equal(other[k], payload["encoder"][k]) for k in other)
    with pytest.raises(TypeError):
        save_encoder([1, 2])


@pytest.mark.parametrize("task", ["multilabel", "multilabel+fg"])
def test_resume_reproduces_uninterrupted_run(task):
    cfg = _cfg(epochs=3, task=task)
    data = pretrain_data(SYN, cfg)
    rec = _Recorder()
    full = pretrain_encoder(MODEL, data, cfg, hooks=[rec])
    assert rec.calls == ["before", "epoch1", "epoch2", "epoch3", "after"]
    assert isinstance(full.state, PretrainState) and full.state.epoch == 3

    stopper = _StopAfter(1)
    with pytest.raises(_Stop):
        pretrain_encoder(MODEL, data, cfg, hooks=[stopper])
    assert stopper.saved is not None and stopper.saved["epoch"] == 1
    # through a file, as a job's checkpoint goes
    resumed = pretrain_encoder(MODEL, pretrain_data(SYN, cfg), cfg, state=stopper.saved)
    assert resumed.state.epoch == 3
    assert _strip(resumed.history) == _strip(full.history)
    for k, v in full.encoder_state.items():
        assert torch.equal(v, resumed.encoder_state[k]), k
    a, b = full.state.model.state_dict(), resumed.state.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_after_train_runs_when_training_raises():
    rec = _Recorder()
    cfg = _cfg(epochs=3)
    with pytest.raises(_Stop):
        pretrain_encoder(MODEL, pretrain_data(SYN, cfg), cfg, hooks=[rec, _StopAfter(1)])
    assert rec.calls == ["before", "epoch1", "after"]


def test_pretrain_data_is_disjoint_from_the_study():
    syn = SyntheticConfig(image_size=32, version=2)
    cfg = PretrainConfig(n_images=40)
    data = pretrain_data(syn, cfg)
    assert len(data) == 40 and data.cfg == syn and data.seed == cfg.data_seed != 0
    ids = set(data.ids)
    pool, test = synthetic_splits(syn, 0, 500, 50)
    extra = synthetic_additional(syn, 0, 50)
    assert not ids & (set(pool.ids) | set(test.ids) | set(extra.ids))
    assert min(ids) >= PRETRAIN_ID_OFFSET > ADDITIONAL_ID_OFFSET > TEST_ID_OFFSET
    # the same ids under the study's seed are other images, with and without recolouring
    study = SyntheticShapes(syn, 0, data.ids[:5])
    same = pretrain_data(syn, PretrainConfig(n_images=40, appearance="same"))
    for i in range(5):
        assert not torch.equal(data[i].image, study[i].image)
        assert not torch.equal(same[i].image, study[i].image)
        # permute_rgb changes colours only: masks, labels and void are the drawing's
        assert torch.equal(data[i].masks, same[i].masks)
        assert torch.equal(data[i].labels, same[i].labels)
        assert torch.equal(data[i].ignore, same[i].ignore)
        assert sorted(data[i].image.flatten(1).sum(1).tolist()) == pytest.approx(
            sorted(same[i].image.flatten(1).sum(1).tolist()))
    assert any(not torch.equal(data[i].image, same[i].image) for i in range(10))
    assert torch.equal(data[3].image, pretrain_data(syn, cfg)[3].image)  # reproducible
    assert pretrain_data(syn, PretrainConfig(n_images=40, data_seed=7)).seed == 7


def test_labels_outside_the_model_classes_are_refused():
    cfg = _cfg(epochs=1)
    data = pretrain_data(SyntheticConfig(image_size=32, version=2, n_classes=20), cfg)
    with pytest.raises(ValueError, match="outside 1..3"):
        pretrain_encoder(MODEL, data, cfg)


@pytest.mark.parametrize("kw, match", [
    ({"task": "imagenet"}, "task"),
    ({"appearance": "sepia"}, "appearance"),
    ({"n_images": 0}, "n_images"),
    ({"epochs": 1.5}, "epochs"),
    ({"batch_size": True}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"fg_weight": float("inf")}, "fg_weight"),
    ({"data_seed": -1}, "data_seed"),
    ({"warmup_steps": -2}, "warmup_steps"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**kw)


def test_too_few_images_for_a_batch():
    cfg = _cfg(n_images=1, epochs=1)
    with pytest.raises(ValueError, match="no training batch"):
        pretrain_encoder(MODEL, pretrain_data(SYN, cfg), cfg)


# -- DDP at world size 2 (gloo) ---------------------------------------------------------

def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = _cfg(epochs=2, batch_size=4, task="multilabel+fg")
        res = pretrain_encoder(MODEL, pretrain_data(SYN, cfg), cfg)
        torch.save({"encoder": res.encoder_state, "history": res.history,
                    "metrics": res.metrics}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_return_the_same_encoder(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for k, v in r0["encoder"].items():
        assert torch.equal(v, r1["encoder"][k]), k  # buffers synced, grads all-reduced
    assert _strip(r0["history"]) == _strip(r1["history"])  # metrics all-reduced
    # each rank took 16 / 2 = 8 images a epoch: the set is sharded, not repeated
    assert [h["images"] for h in r0["history"]] == [8.0, 8.0]
    assert r0["metrics"]["eval_f1"] == r1["metrics"]["eval_f1"]
