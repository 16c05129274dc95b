from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torchvision

from basis.models import RSIS, ConvLSTMCell, ModelConfig

SMALL = dict(hidden=32, n_classes=5)


@pytest.mark.parametrize("steps", [1, 3, 6])
def test_wrsis_output_shapes(steps):
    torch.manual_seed(0)
    model = RSIS(ModelConfig(**SMALL)).eval()
    images = torch.rand(2, 3, 32, 32)
    class_seq = torch.randint(0, 6, (2, steps))
    out = model(images, class_seq)
    assert out.mask_logits.shape == (2, steps, 32, 32)
    assert out.class_logits.shape == (2, steps, 6)
    assert out.stop_logits.shape == (2, steps)
    assert out.iou.shape == (2, steps)
    assert ((out.iou >= 0) & (out.iou <= 1)).all()


def test_plain_rsis_runs_max_steps_on_odd_sizes():
    model = RSIS(ModelConfig(weak=False, iou_head=False, max_steps=3, **SMALL)).eval()
    out = model(torch.rand(1, 3, 40, 56))
    assert out.mask_logits.shape == (1, 3, 40, 56)
    assert torch.equal(out.iou, torch.zeros(1, 3))
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 32, 32), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        RSIS(ModelConfig(**SMALL))(torch.rand(1, 3, 32, 32))


def test_class_input_changes_the_mask():
    torch.manual_seed(0)
    model = RSIS(ModelConfig(**SMALL)).eval()
    images = torch.rand(1, 3, 32, 32)
    a = model(images, torch.tensor([[1]])).mask_logits
    b = model(images, torch.tensor([[2]])).mask_logits
    assert not torch.allclose(a, b)


def test_hidden_state_carries_across_steps():
    torch.manual_seed(0)
    model = RSIS(ModelConfig(**SMALL)).eval()
    images = torch.rand(1, 3, 32, 32)
    out = model(images, torch.tensor([[3, 3]]))
    assert not torch.allclose(out.mask_logits[:, 0], out.mask_logits[:, 1])


def test_convlstm_cell_shapes():
    cell = ConvLSTMCell(4, 6)
    h, c = cell(torch.rand(2, 4, 5, 7), None)
    assert h.shape == c.shape == (2, 6, 5, 7)
    h2, _ = cell(torch.rand(2, 4, 5, 7), (h, c))
    assert h2.shape == h.shape


def _encoder_matches(model, ref) -> None:
    """Every encoder tensor (weights and BN statistics) equals the torchvision net's."""
    enc = model.encoder.state_dict()
    want = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert set(enc) == set(want)
    for k, v in want.items():
        assert torch.equal(enc[k], v), k


def _resnet18():
    ref = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # BN statistics off their defaults, so that they are checked too
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
    return ref


def test_encoder_weights_from_a_torchvision_state_dict(tmp_path):
    path = tmp_path / "resnet18-random.pth"
    ref = _resnet18()
    torch.save(ref.state_dict(), path)
    torch.manual_seed(123)  # a different random start than the file's
    _encoder_matches(RSIS(ModelConfig(encoder_weights=str(path), **SMALL)), ref)
    # without fc, and under DDP's prefix
    sd = {f"module.{k}": v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    torch.save(sd, tmp_path / "headless.pth")
    _encoder_matches(RSIS(ModelConfig(encoder_weights=str(tmp_path / "headless.pth"),
                                      **SMALL)), ref)


def test_encoder_weights_from_basis_checkpoints(tmp_path):
    ref = _resnet18()
    src = RSIS(ModelConfig(**SMALL))
    src.encoder.load_state_dict({k: v for k, v in ref.state_dict().items()
                                 if not k.startswith("fc.")})
    formats = {
        "model.pt": src.state_dict(),                                   # a stage's model
        "encoder.pt": {"encoder": src.encoder.state_dict()},
        "train.pt": {"model": src.state_dict(), "epoch": 3,           # a training state
                     "rng": {"numpy": np.random.get_state(), "python": random.getstate()}},
    }
    for name, obj in formats.items():
        torch.save(obj, tmp_path / name)
        _encoder_matches(RSIS(ModelConfig(encoder_weights=str(tmp_path / name), **SMALL)), ref)


def test_encoder_weights_errors_name_the_file_and_the_keys(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    with pytest.raises(FileNotFoundError, match="missing.pth.*does not exist"):
        RSIS(ModelConfig(encoder_weights=str(tmp_path / "missing.pth"), **SMALL))

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"these are not weights")
    with pytest.raises(ValueError, match="corrupt.pth.*cannot be read"):
        RSIS(ModelConfig(encoder_weights=str(corrupt), **SMALL))
    torch.save(ref.state_dict(), tmp_path / "whole.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((tmp_path / "whole.pth").read_bytes()[:4096])
    with pytest.raises(ValueError, match="truncated.pth.*cannot be read"):
        RSIS(ModelConfig(encoder_weights=str(truncated), **SMALL))

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth.*no ResNet state"):
        RSIS(ModelConfig(encoder_weights=str(tmp_path / "list.pth"), **SMALL))

    sd = ref.state_dict()
    del sd["layer4.1.conv2.weight"]
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)  # a different network's stem
    torch.save(sd, tmp_path / "wrong.pth")
    with pytest.raises(ValueError) as err:
        RSIS(ModelConfig(encoder_weights=str(tmp_path / "wrong.pth"), **SMALL))
    msg = str(err.value)
    assert "wrong.pth" in msg and "not a torchvision resnet18" in msg
    assert "missing keys: layer4.1.conv2.weight" in msg
    assert "unexpected keys: layer5.0.conv1.weight" in msg
    assert "conv1.weight (64, 3, 3, 3) vs (64, 3, 7, 7)" in msg

    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match=r"unexpected keys: layer1\.2\.bn1\.bias"):
        RSIS(ModelConfig(encoder_weights=str(tmp_path / "r34.pth"), **SMALL))


def test_unknown_backbone_and_bad_hidden():
    with pytest.raises(ValueError):
        RSIS(ModelConfig(backbone="vgg16"))
    with pytest.raises(ValueError):
        RSIS(ModelConfig(hidden=40))


def test_seeded_init_is_reproducible_and_leaves_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = RSIS(ModelConfig(**SMALL), seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = RSIS(ModelConfig(**SMALL), seed=7)
    c = RSIS(ModelConfig(**SMALL), seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.fc_class.weight, c.fc_class.weight)


def test_mask_weighted_iou_pooling():
    torch.manual_seed(0)
    model = RSIS(ModelConfig(iou_pool="avg+mask", **SMALL)).eval()
    images = torch.rand(2, 3, 32, 32)
    out = model(images, torch.tensor([[1, 2], [3, 0]]))
    feat = sum(model.cell_dims)
    assert out.iou_features.shape == (2, 2, 2 * feat + 2)
    assert torch.allclose(out.iou, model.iou_from_features(out.iou_features))
    # The IoU branch never sends gradients into the mask through its weights.
    out.iou.sum().backward()
    assert model.conv_out.weight.grad is None or not model.conv_out.weight.grad.any()
    with pytest.raises(ValueError):
        ModelConfig(iou_pool="max")


def test_iou_features_are_the_average_pool_by_default():
    torch.manual_seed(0)
    model = RSIS(ModelConfig(**SMALL)).eval()
    out = model(torch.rand(1, 3, 32, 32), torch.tensor([[1]]))
    assert out.iou_features.shape == (1, 1, sum(model.cell_dims))
