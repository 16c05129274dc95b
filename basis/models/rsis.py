"""RSIS / W-RSIS / IoU-W-RSIS: a recurrent encoder-decoder for instance segmentation.

The encoder is a torchvision ResNet; the decoder is a stack of five ConvLSTM cells that
emits one instance mask per time step (Salvador et al., RSIS). W-RSIS (paper section 4)
also feeds the decoder, at every step, a one-hot vector of the class to segment (the
weak IL+C label). IoU-W-RSIS (section 5) adds a branch that predicts the quality of each
step's mask. Layer sizes follow the public RSIS code (DESIGN.md, "Details of the method
that the paper leaves out") with the hidden size ``H`` as a parameter.

ImageNet normalisation is part of the model: it takes images in [0, 1], as the datasets
produce them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

BACKBONES: dict[str, tuple[int, ...]] = {
    # channels of relu(conv1), layer1, layer2, layer3, layer4
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "resnet101": (64, 256, 512, 1024, 2048),
}
IOU_POOLS = ("avg", "avg+mask")
INFERENCE_RULES = ("rsis", "first_stop")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the network.

    Attributes:
        backbone: torchvision ResNet name (the paper uses resnet101).
        hidden: decoder width ``H`` (paper/RSIS: 128); cells have H, H/2, …, H/16
            channels, so it must be a multiple of 16.
        n_classes: object classes ``C`` (ids 1..C; class logit 0 is end-of-sequence).
        max_steps: time steps of plain RSIS when no class sequence is given.
        weak: W-RSIS, i.e. the decoder takes the class to segment at each step.
        iou_head: add the IoU prediction branch (IoU-W-RSIS).
        encoder_weights: local path of weights to start the encoder from (nothing is
            downloaded): a torchvision ResNet state dict of ``backbone`` (e.g.
            ``resnet101-63fe2227.pth``; its ``fc`` is ignored), or a basis checkpoint
            holding an encoder (`load_encoder_weights`); None for random initialisation.
        iou_pool: what the IoU branch pools from every decoder resolution. "avg"
            (default, the paper's Fig. 3): global average pooling of each ConvLSTM
            cell's hidden state. "avg+mask": also a pooling weighted by the step's
            predicted mask (resized to the cell) and two statistics of the mask itself
            (mean probability, and mean probability inside the mask), so the branch
            sees the object it is rating and not only the whole-image context. The
            mask weights are detached: the IoU branch never changes the masks.
        inference: how `basis.infer.predict` reads plain RSIS's output into detections
            (ignored for W-RSIS, which always emits one detection per weak label).
            "rsis" (default, RSIS's own evaluation): every step is scanned, none ends
            the sequence; a step whose σ(stop) is under 0.5 or whose mask covers under
            0.1 % of the image is skipped; each kept mask is one detection per class,
            scored p(class)·σ(stop). "first_stop": the steps before the first one with
            σ(stop) ≤ 0.5, one detection each, with the most probable class. It lives
            here, not only as an argument of ``predict``, so that a sweep's ``model:``
            section chooses it for every stage that evaluates the network.
    """

    backbone: str = "resnet18"
    hidden: int = 64
    n_classes: int = 20
    max_steps: int = 8
    weak: bool = True
    iou_head: bool = True
    encoder_weights: str | None = None
    iou_pool: str = "avg"
    inference: str = "rsis"

    def __post_init__(self) -> None:
        if self.iou_pool not in IOU_POOLS:
            raise ValueError(f"iou_pool={self.iou_pool!r} not in {IOU_POOLS}")
        if self.inference not in INFERENCE_RULES:
            raise ValueError(f"inference={self.inference!r} not in {INFERENCE_RULES}")


@dataclass
class RSISOutput:
    """What the network predicts for a batch over T steps.

    Attributes:
        mask_logits: (B, T, H, W) one mask logit map per step, at input resolution.
        class_logits: (B, T, C+1) class scores, index 0 = end of sequence.
        stop_logits: (B, T); σ(stop) is the probability that the step holds an object
            (RSIS convention: inference goes on while it is above 0.5).
        iou: (B, T) predicted mask quality in IoU *target* space (see
            `basis.losses.iou_target_transform`), in [0, 1]; zeros without an IoU head.
        iou_features: (B, T, F) the IoU branch's input (``iou == RSIS.iou_from_features
            (iou_features)``), None without an IoU head. The freeze schedule caches it.
    """

    mask_logits: torch.Tensor
    class_logits: torch.Tensor
    stop_logits: torch.Tensor
    iou: torch.Tensor
    iou_features: torch.Tensor | None = None


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell (Shi et al. 2015) with a 3×3 kernel.

    Args:
        in_channels: channels of the input map.
        hidden: channels of the hidden and cell states.
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size,
                               padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step.

        Args:
            x: (B, in_channels, h, w).
            state: previous (hidden, cell), each (B, hidden, h, w), or None for zeros.

        Returns:
            (hidden, cell), each (B, hidden, h, w).
        """
        if state is None:
            z = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (z, z)
        h, c = state
        return self.update(self.gates(torch.cat([x, h], 1)), c)

    def update(self, gates: torch.Tensor, c: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM nonlinearity on the gate pre-activations.

        Args:
            gates: (B, 4·hidden, h, w), the gates conv's output, gates in the order
                input, forget, output, candidate.
            c: previous cell state (B, hidden, h, w), or None for zeros.

        Returns:
            (hidden, cell), each (B, hidden, h, w).
        """
        # split, not slicing: its backward is one concatenation, where each slice's
        # would write a zero-filled full-size gradient.
        sig, g = gates.split([3 * self.hidden, self.hidden], 1)
        i, f, o = torch.sigmoid(sig).chunk(3, 1)
        g = torch.tanh(g)
        c = i * g if c is None else f * c + i * g   # f·0 + i·g is i·g exactly
        return o * torch.tanh(c), c


class ResNetEncoder(nn.Module):
    """A torchvision ResNet cut into its five stages.

    Args:
        name: one of `BACKBONES`.
        weights: local path of weights for this ResNet (`load_encoder_weights`), or None.
    """

    def __init__(self, name: str, weights: str | None = None) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        net = getattr(torchvision.models, name)(weights=None)
        if weights is not None:
            load_encoder_weights(net, weights, name)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.layer4 = net.layer4
        self.channels = BACKBONES[name]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x (B, 3, H, W) normalised. Returns the maps at strides 2, 4, 8, 16, 32."""
        x1 = self.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(self.maxpool(x1))
        x3 = self.layer2(x2)
        x4 = self.layer3(x3)
        x5 = self.layer4(x4)
        return [x1, x2, x3, x4, x5]


def _tensor_dict(obj: object) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _encoder_state(obj: object) -> dict[str, torch.Tensor] | None:
    """The ResNet state inside a loaded file, keys as torchvision names them, or None.

    Accepted: a torchvision ResNet state dict; a basis RSIS state dict (keys
    ``encoder.*``); a dict holding one of those under ``encoder``, ``model`` or
    ``state_dict`` (a basis training checkpoint holds the model under ``model``).
    A ``module.`` prefix (DDP) is removed.
    """
    if not isinstance(obj, dict):
        return None
    for key in ("encoder", "model", "state_dict"):
        if key in obj and isinstance(obj[key], dict):
            found = _encoder_state(obj[key])
            if found is not None:
                return found
    if not _tensor_dict(obj):
        return None
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("encoder.") for k in sd):
        sd = {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}
    return sd


def _numpy_globals() -> list:
    """What ``torch.load(weights_only=True)`` needs to rebuild numpy arrays (the numpy
    RNG state that `basis.train.TrainState.state_dict` saves)."""
    import numpy as np
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _some(keys: list[str], most: int = 8) -> str:
    shown = ", ".join(keys[:most])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > most else "")


def load_encoder_weights(net: nn.Module, path: str, name: str) -> None:
    """Load local ResNet weights into ``net``, a torchvision ``name``.

    ``path`` may hold a torchvision state dict (as ``torch.save(torchvision.models.
    resnet101().state_dict(), path)`` writes it; ``fc.*`` is ignored), or a basis
    checkpoint with an encoder state (`_encoder_state`). Every other key must match
    ``net``'s by name and shape.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read, holds no ResNet state, or its keys do not
            match this ResNet (the message names the file and the missing, unexpected
            and mis-shaped keys).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"encoder_weights={path!r} does not exist; give the local path of a torchvision "
            f"{name} state dict (no weights are downloaded)")
    try:
        # weights_only, plus the numpy pieces of a basis training checkpoint's RNG state
        with torch.serialization.safe_globals(_numpy_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"encoder_weights={path!r} cannot be read as a torch state dict "
                         f"(corrupt, not written by torch.save, or holding more than "
                         f"tensors): {type(e).__name__}: {e}") from e
    sd = _encoder_state(obj)
    if sd is None:
        raise ValueError(f"encoder_weights={path!r} holds a {type(obj).__name__} with no "
                         f"ResNet state: expected a torchvision {name} state dict or a basis "
                         f"checkpoint with an encoder")
    own = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                    for k in set(own) & set(sd) if sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{label} keys: {_some(keys)}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected),
                  ("mis-shaped (file vs model)", shapes)) if keys]
        raise ValueError(f"encoder_weights={path!r} is not a torchvision {name} state dict; "
                         + "; ".join(parts))
    net.load_state_dict(sd, strict=False)


def _tap_masks(size: tuple[int, int], kernel_size: tuple[int, int], like: torch.Tensor
               ) -> torch.Tensor:
    """Which taps of a zero-padded "same" conv fall inside an ``size`` map.

    A conv of a map constant over space (value 1) with one kernel tap set sums the taps
    that land inside the map: 1 inside, 0 on the padding. So ``w.flatten(1) @ masks``
    is the conv of an all-ones map with ``w`` (out, k, k), exactly.

    Returns:
        (k·k, h·w) 0/1, taps in ``weight.flatten()`` order, dtype and device of ``like``.
    """
    kh, kw = kernel_size
    eye = torch.eye(kh * kw, dtype=like.dtype, device=like.device).view(kh * kw, 1, kh, kw)
    ones = like.new_ones(1, 1, *size)
    return F.conv2d(ones, eye, padding=(kh // 2, kw // 2)).view(kh * kw, -1)


#: Bilinear ×2 upsampling (align_corners=False) composed with a 3-tap filter, per output
#: phase a ∈ {0, 1}: rows are the source offsets −1, 0, +1, columns the filter's taps.
_UP2_TAPS = (((0.75, 0.25, 0.0), (0.25, 0.75, 0.75), (0.0, 0.0, 0.25)),
             ((0.25, 0.0, 0.0), (0.75, 0.75, 0.25), (0.0, 0.25, 0.75)))


def upsample2_conv3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                    ) -> torch.Tensor:
    """``conv2d(interpolate(x, ×2, bilinear), weight, bias, padding=1)`` without the
    full-resolution input: one 3×3 conv per output phase at ``x``'s resolution, then
    `pixel_shuffle` (the same function to float rounding; at 128 px a quarter of the
    time, since the ×2 map and oneDNN's few-channel conv on it are never made).

    Bilinear ×2 of ``x`` equals the interior formula on ``x`` replicate-padded, and
    that extends the upsampled map by replicating its border; the conv's zero padding
    is restored by subtracting the border's contribution (1-D convs of the upsampled
    map's first and last rows and columns).

    Args:
        x: (N, C, h, w).
        weight: (O, C, 3, 3); bias: (O,) or None.

    Returns:
        (N, O, 2h, 2w).
    """
    n, c, h, w = x.shape
    o = weight.shape[0]
    m = torch.tensor(_UP2_TAPS, dtype=weight.dtype, device=weight.device)   # (2, 3, 3)
    k = torch.einsum("ayk,ockl,bxl->oabcyx", m, weight, m).reshape(4 * o, c, 3, 3)
    # channels_last: oneDNN pads a few-channel NCHW map to its 8/16-channel blocks (at
    # 128 px, 40 maps of 4 channels, 1 thread: this function's forward + backward 43 ms
    # with the conv in NCHW, 19 ms so)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate").contiguous(memory_format=torch.channels_last)
    y = F.conv2d(xp, k, None if bias is None else bias.repeat_interleave(4)).contiguous()
    y = F.pixel_shuffle(y, 2)                                                # (N, O, 2h, 2w)
    # first and last rows / columns of the upsampled map, (N, C, 2, 2w) and (N, C, 2, 2h)
    rows = F.interpolate(x[:, :, [0, -1], :].reshape(n, 2 * c, w), scale_factor=2,
                         mode="linear", align_corners=False).view(n, c, 2, 2 * w)
    cols = F.interpolate(x[:, :, :, [0, -1]].transpose(2, 3).reshape(n, 2 * c, h),
                         scale_factor=2, mode="linear", align_corners=False
                         ).view(n, c, 2, 2 * h)
    # the padding rows hold the replicated rows, corners included; the padding columns
    # (without the corners) the replicated columns
    y[:, :, 0, :] -= F.conv1d(F.pad(rows[:, :, 0], (1, 1), mode="replicate"), weight[:, :, 0])
    y[:, :, -1, :] -= F.conv1d(F.pad(rows[:, :, 1], (1, 1), mode="replicate"), weight[:, :, 2])
    y[:, :, :, 0] -= F.conv1d(F.pad(cols[:, :, 0], (1, 1)), weight[:, :, :, 0])
    y[:, :, :, -1] -= F.conv1d(F.pad(cols[:, :, 1], (1, 1)), weight[:, :, :, 2])
    return y


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout))


class RSIS(nn.Module):
    """Recurrent instance segmentation network (RSIS, W-RSIS, IoU-W-RSIS).

    Args:
        cfg: the architecture.
        seed: when given, the random initialisation is drawn from this seed (without
            touching the global RNG); otherwise from the global torch RNG.
    """

    def __init__(self, cfg: ModelConfig, seed: int | None = None) -> None:
        super().__init__()
        if seed is None:
            self._build(cfg)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._build(cfg)

    def _build(self, cfg: ModelConfig) -> None:
        if cfg.hidden % 16:
            raise ValueError(f"hidden={cfg.hidden} must be a multiple of 16")
        self.cfg = cfg
        hd = cfg.hidden
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.encoder = ResNetEncoder(cfg.backbone, cfg.encoder_weights)
        c1, c2, c3, c4, c5 = self.encoder.channels
        # Skips from deep to shallow: layer4, layer3, layer2, layer1, relu(conv1).
        skip_out = [hd, hd, hd // 2, hd // 4, hd // 8]
        self.skips = nn.ModuleList(_conv_bn(c, o) for c, o in zip((c5, c4, c3, c2, c1), skip_out))
        self.cell_dims = [hd, hd // 2, hd // 4, hd // 8, hd // 16]
        n_cls_in = cfg.n_classes if cfg.weak else 0
        cell_in = [hd] + [self.cell_dims[i - 1] + skip_out[i] for i in range(1, 5)]
        self.cells = nn.ModuleList(ConvLSTMCell(ci + n_cls_in, co)
                                   for ci, co in zip(cell_in, self.cell_dims))
        # Input channels of each cell's gates conv, in the order of its concatenation:
        # (hidden of the cell above upsampled, skip, class one-hot, own hidden).
        self._gate_split = [((self.cell_dims[i - 1] if i else 0), skip_out[i], n_cls_in,
                             self.cell_dims[i]) for i in range(5)]
        self.conv_out = nn.Conv2d(self.cell_dims[-1], 1, 3, padding=1)
        feat = sum(self.cell_dims)
        self.fc_class = nn.Linear(feat, cfg.n_classes + 1)
        self.fc_stop = nn.Linear(feat, 1)
        iou_feat = feat if cfg.iou_pool == "avg" else 2 * feat + 2
        self.fc_iou = nn.Linear(iou_feat, 1) if cfg.iou_head else None

    def iou_parameters(self) -> list[nn.Parameter]:
        """The parameters of the IoU branch (empty without one)."""
        return list(self.fc_iou.parameters()) if self.fc_iou is not None else []

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def iou_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """The IoU branch's FC on pooled features.

        Args:
            feats: (..., F) as in `RSISOutput.iou_features`.

        Returns:
            (...) predicted IoU in target space, in [0, 1].
        """
        assert self.fc_iou is not None, "model has no IoU branch"
        return torch.sigmoid(self.fc_iou(feats)[..., 0])

    def forward(self, images: torch.Tensor, class_seq: torch.Tensor | None = None) -> RSISOutput:
        """Segment T instances per image.

        Args:
            images: (B, 3, H, W) float in [0, 1].
            class_seq: (B, T) long, the class to segment at each step (1..C), 0 for
                padding; required for W-RSIS, must be None for plain RSIS (T=max_steps).

        Returns:
            RSISOutput with T steps.
        """
        cfg = self.cfg
        if cfg.weak and class_seq is None:
            raise ValueError("W-RSIS (weak=True) needs class_seq (B, T)")
        if not cfg.weak and class_seq is not None:
            raise ValueError("plain RSIS (weak=False) takes no class_seq")
        b, _, h, w = images.shape
        t_steps = class_seq.shape[1] if class_seq is not None else cfg.max_steps

        feats = self.encoder((images - self.mean) / self.std)
        skips = [m(f) for m, f in zip(self.skips, reversed(feats))]
        onehot = None
        if class_seq is not None:
            # Class 0 (padding) maps to the all-zero vector.
            onehot = F.one_hot(class_seq.clamp(min=0), cfg.n_classes + 1)[..., 1:].to(images.dtype)

        # Each cell's gates conv runs on the concatenation (upsampled hidden of the cell
        # above, skip, class one-hot, own hidden). It is linear in its input, so it is
        # computed as a sum of one conv per part: the skip part (with the bias) is the
        # same at every step and is convolved once; the class one-hot is constant over
        # the map, so its conv is (one-hot · weight) spread over the kernel taps that
        # fall inside the map (`_tap_masks`); only the two hidden states are convolved
        # at every step. Same function, T times fewer MACs on the static inputs.
        static: list[list[torch.Tensor]] = []       # per cell, per step (B, 4h, h, w)
        dyn_w = []
        for cell, (n_up, n_skip, n_cls, n_hid), skip in zip(self.cells, self._gate_split, skips):
            w_up, w_skip, w_cls, w_hid = cell.gates.weight.split([n_up, n_skip, n_cls, n_hid], 1)
            pre = F.conv2d(skip, w_skip, cell.gates.bias, padding=cell.gates.padding)
            if onehot is None:
                static.append([pre] * t_steps)
            else:
                # (B, T, 4h, k·k): the weight of each tap for the step's class; then
                # spread over the map and added to the skip part, for all T at once.
                taps = torch.einsum("btc,ocq->btoq", onehot, w_cls.flatten(2))
                cls = taps @ _tap_masks(skip.shape[-2:], cell.gates.kernel_size, skip)
                static.append((pre[:, None] + cls.view(b, t_steps, *pre.shape[1:])).unbind(1))
            dyn_w.append((w_up.contiguous() if n_up else None, w_hid.contiguous(),
                          torch.cat([w_up, w_hid], 1) if n_up else w_hid.contiguous()))

        states: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.cells)
        hids: list[list[torch.Tensor]] = [[] for _ in self.cells]
        for t in range(t_steps):
            up = None
            for i, cell in enumerate(self.cells):
                w_up, w_hid, w_both = dyn_w[i]
                pad = cell.gates.padding
                state = states[i]
                if state is not None and up is not None:
                    gates = F.conv2d(torch.cat([up, state[0]], 1), w_both, padding=pad)
                elif state is not None:
                    gates = F.conv2d(state[0], w_hid, padding=pad)
                elif up is not None:          # first step: the own hidden state is zero
                    gates = F.conv2d(up, w_up, padding=pad)
                else:
                    gates = None
                gates = static[i][t] if gates is None else gates.add_(static[i][t])
                hid, cell_state = cell.update(gates, None if state is None else state[1])
                states[i] = (hid, cell_state)
                hids[i].append(hid)
                if i + 1 < len(self.cells):
                    up = F.interpolate(hid, size=skips[i + 1].shape[-2:], mode="bilinear",
                                       align_corners=False)

        # Nothing below feeds the recurrence, so it runs once on all T steps.
        hid_bt = [torch.stack(hs, 1).flatten(0, 1) for hs in hids]     # (B·T, c, h, w)
        last = hid_bt[-1]                                                # (B·T, c, h/2, w/2)
        if (2 * last.shape[-2], 2 * last.shape[-1]) == (h, w):
            mask_bt = upsample2_conv3(last, self.conv_out.weight, self.conv_out.bias)
        else:
            # odd sizes. channels_last: oneDNN pads a 4-channel NCHW map to its
            # 8/16-channel blocks, which made this 4 → 1 conv slow.
            x = F.interpolate(last.contiguous(memory_format=torch.channels_last),
                              size=(h, w), mode="bilinear", align_corners=False)
            mask_bt = self.conv_out(x).contiguous()                      # (B·T, 1, H, W)
        side = torch.cat([hd_.amax(dim=(2, 3)) for hd_ in hid_bt], 1).view(b, t_steps, -1)
        iou_features = None
        if self.fc_iou is not None:
            # Paper Fig. 3: decoder features at every resolution, global *average*
            # pooled, concatenated, one FC.
            pooled = [hd_.mean(dim=(2, 3)) for hd_ in hid_bt]
            if cfg.iou_pool == "avg+mask":
                prob = torch.sigmoid(mask_bt.detach())                  # (B·T, 1, H, W)
                for hd_ in hid_bt:
                    wgt = F.adaptive_avg_pool2d(prob, hd_.shape[-2:])
                    pooled.append((hd_ * wgt).sum((2, 3)) / wgt.sum((2, 3)).clamp(min=1e-6))
                inside = (prob * prob).sum((1, 2, 3)) / prob.sum((1, 2, 3)).clamp(min=1e-6)
                pooled.append(torch.stack([prob.mean((1, 2, 3)), inside], 1))
            iou_features = torch.cat(pooled, 1).view(b, t_steps, -1)
        iou = (self.iou_from_features(iou_features) if iou_features is not None
               else images.new_zeros(b, t_steps))
        return RSISOutput(
            mask_logits=mask_bt.view(b, t_steps, h, w),
            class_logits=self.fc_class(side),
            stop_logits=self.fc_stop(side)[..., 0],
            iou=iou,
            iou_features=iou_features,
        )
