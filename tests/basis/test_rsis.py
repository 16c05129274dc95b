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


# --- the decoder's fast path against the plain one -------------------------------------
def _reference_cell(cell: ConvLSTMCell, x, state):
    """ConvLSTMCell as first written: one conv on [x, h], gates i, f, o, g."""
    if state is None:
        z = x.new_zeros(x.shape[0], cell.hidden, *x.shape[-2:])
        state = (z, z)
    h, c = state
    i, f, o, g = cell.gates(torch.cat([x, h], 1)).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _reference_forward(model: RSIS, images, class_seq=None):
    """RSIS.forward before the decoder was sped up (issue 14): every cell convolves the
    concatenation (upsampled hidden, skip, class one-hot map, own hidden) at every step,
    and the mask, heads and IoU features are computed step by step. Kept to check that
    the fast path computes the same function."""
    import torch.nn.functional as F

    cfg = model.cfg
    b, _, h, w = images.shape
    t_steps = class_seq.shape[1] if class_seq is not None else cfg.max_steps
    feats = model.encoder((images - model.mean) / model.std)
    skips = [m(f) for m, f in zip(model.skips, reversed(feats))]
    if class_seq is not None:
        onehot = F.one_hot(class_seq.clamp(min=0), cfg.n_classes + 1)[..., 1:].to(images.dtype)
    states = [None] * len(model.cells)
    masks, classes, stops, iou_feats = [], [], [], []
    for t in range(t_steps):
        x = skips[0]
        maxp, hids = [], []
        for i, cell in enumerate(model.cells):
            if class_seq is not None:
                x = torch.cat([x, onehot[:, t, :, None, None].expand(-1, -1, *x.shape[-2:])], 1)
            hid, c = _reference_cell(cell, x, states[i])
            states[i] = (hid, c)
            maxp.append(hid.amax(dim=(2, 3)))
            hids.append(hid)
            if i + 1 < len(model.cells):
                nxt = skips[i + 1]
                x = torch.cat([F.interpolate(hid, size=nxt.shape[-2:], mode="bilinear",
                                             align_corners=False), nxt], 1)
            else:
                x = F.interpolate(hid, size=(h, w), mode="bilinear", align_corners=False)
        mask_t = model.conv_out(x)[:, 0]
        masks.append(mask_t)
        side = torch.cat(maxp, 1)
        classes.append(model.fc_class(side))
        stops.append(model.fc_stop(side)[:, 0])
        if model.fc_iou is not None:
            pooled = [hd.mean(dim=(2, 3)) for hd in hids]
            if cfg.iou_pool == "avg+mask":
                prob = torch.sigmoid(mask_t.detach())[:, None]
                for hd in hids:
                    wgt = F.adaptive_avg_pool2d(prob, hd.shape[-2:])
                    pooled.append((hd * wgt).sum((2, 3)) / wgt.sum((2, 3)).clamp(min=1e-6))
                inside = (prob * prob).sum((1, 2, 3)) / prob.sum((1, 2, 3)).clamp(min=1e-6)
                pooled.append(torch.stack([prob.mean((1, 2, 3)), inside], 1))
            iou_feats.append(torch.cat(pooled, 1))
    iou_features = torch.stack(iou_feats, 1) if iou_feats else None
    iou = (model.iou_from_features(iou_features) if iou_features is not None
           else images.new_zeros(b, t_steps))
    return (torch.stack(masks, 1), torch.stack(classes, 1), torch.stack(stops, 1), iou,
            iou_features)


@pytest.mark.parametrize("kw,size", [
    ({}, (48, 40)),
    ({"iou_pool": "avg+mask"}, (32, 32)),
    ({"weak": False, "iou_head": False, "max_steps": 3}, (33, 47)),   # odd sizes
])
def test_fast_decoder_matches_the_reference(kw, size):
    """Same function as the plain decoder: outputs and every gradient agree to float
    rounding (fixed seed, training mode, a loss touching every output)."""
    cfg = ModelConfig(**{**SMALL, **kw})
    fast, ref = RSIS(cfg, seed=0).train(), RSIS(cfg, seed=0).train()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, *size, generator=gen)
    class_seq = (torch.tensor([[1, 2, 0, 0], [3, 3, 5, 0], [4, 1, 2, 5]]) if cfg.weak
                 else None)
    out = fast(images, class_seq)
    got = (out.mask_logits, out.class_logits, out.stop_logits, out.iou, out.iou_features)
    want = _reference_forward(ref, images, class_seq)
    loss_a = loss_b = 0.0
    for a, b in zip(got, want):
        if b is None:
            assert a is None
            continue
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a - b).abs().max()
        weights = torch.randn(b.shape, generator=gen)
        loss_a = loss_a + (a * weights).sum()
        loss_b = loss_b + (b * weights).sum()
    loss_a.backward()
    loss_b.backward()
    grads = dict(ref.named_parameters())
    scale = max(p.grad.abs().max().item() for p in grads.values() if p.grad is not None)
    for name, p in fast.named_parameters():
        q = grads[name]
        assert (p.grad is None) == (q.grad is None), name
        if q.grad is not None:
            # a conv bias before BatchNorm has a true gradient of 0: rounding noise only,
            # hence the absolute tolerance relative to the largest gradient
            assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6 * scale), (
                name, (p.grad - q.grad).abs().max().item(), scale)
    # and the running statistics moved the same way
    for (name, a), b in zip(fast.named_buffers(), ref.buffers()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), name


def test_convlstm_cell_matches_the_reference():
    torch.manual_seed(0)
    cell = ConvLSTMCell(4, 6)
    x = torch.rand(2, 4, 5, 7)
    for state in (None, (torch.rand(2, 6, 5, 7), torch.rand(2, 6, 5, 7))):
        for a, b in zip(cell(x, state), _reference_cell(cell, x, state)):
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 4, 1, 1), (2, 3, 5, 7), (1, 2, 2, 9)])
def test_upsample2_conv3_is_the_conv_of_the_bilinear_upsampling(shape):
    """The phase-wise output conv equals bilinear ×2 then a zero-padded 3×3 conv, in
    value and in every gradient (float64: rounding only), borders and corners included."""
    import torch.nn.functional as F

    from basis.models.rsis import upsample2_conv3

    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(2, shape[1], 3, 3, dtype=torch.float64, generator=gen,
                         requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, generator=gen, requires_grad=True)
    want = F.conv2d(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
                    weight, bias, padding=1)
    got = upsample2_conv3(x, weight, bias)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    g = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    for a, b in zip(torch.autograd.grad(got, (x, weight, bias), g),
                    torch.autograd.grad(want, (x, weight, bias), g)):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
