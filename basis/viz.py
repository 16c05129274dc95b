"""Qualitative pictures in the style of the paper's Fig. 7: input, ground truth, prediction.

One row per image, three panels: the input image; its ground-truth instances as
translucent colour overlays with the void (``ignore``) pixels grey; the predicted
instances, each labelled with its predicted IoU, and the image score (Eq. 2) of the
row. Colours are a fixed palette indexed by instance, and a predicted mask takes the
colour of the ground-truth instance it overlaps most (greedy by IoU), so a good
prediction looks like its ground truth; the picture is a pure function of its inputs.

Pillow only; `save_qualitative` is the only function that touches the file system.
"""
from __future__ import annotations

import colorsys
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from basis.data.pseudo import decode
from basis.types import ImagePrediction, Sample

#: Opacity of an instance overlay (its 1-pixel outline is drawn opaque).
ALPHA = 0.5
#: Colour of void / ignore pixels in the ground-truth panel.
VOID_RGB = (128, 128, 128)
#: Where a panel is empty (images of a row smaller than the largest of the grid).
BACKGROUND_RGB = (24, 24, 24)


def palette(k: int) -> np.ndarray:
    """Colour of instance ``k`` (0-based): golden-ratio hue steps, alternating value, so
    that consecutive instances differ strongly.

    Returns:
        (3,) float32 in [0, 1].
    """
    h = (0.07 + k * 0.6180339887) % 1.0
    v = 1.0 if k % 2 == 0 else 0.8
    return np.asarray(colorsys.hsv_to_rgb(h, 0.9, v), dtype=np.float32)


def match_colours(pred_masks: np.ndarray, gt_masks: np.ndarray) -> list[int]:
    """Palette index of each predicted mask: that of the ground-truth instance it
    overlaps most (greedy, highest IoU first, each GT used once), else a fresh one
    after the GT colours.

    Args:
        pred_masks: (N, H, W) bool.
        gt_masks: (K, H, W) bool.

    Returns:
        N palette indices.
    """
    n, k = pred_masks.shape[0], gt_masks.shape[0]
    out = [-1] * n
    if n and k:
        p = pred_masks.reshape(n, -1).astype(np.float64)
        g = gt_masks.reshape(k, -1).astype(np.float64)
        inter = p @ g.T
        union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)
        # stable order: ties are broken by (pred, gt) index, so colours are deterministic
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            i, j = divmod(int(flat), k)
            if iou[i, j] <= 0:
                break
            if out[i] < 0 and j not in out:
                out[i] = j
    fresh = k
    for i in range(n):
        if out[i] < 0:
            out[i], fresh = fresh, fresh + 1
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of ``mask`` with a 4-neighbour outside it."""
    pad = np.pad(mask, 1, constant_values=False)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return mask & ~inner


def overlay(rgb: np.ndarray, masks: np.ndarray, colours: Sequence[int],
            ignore: np.ndarray | None = None) -> np.ndarray:
    """Blend instance masks onto an image, in order (later masks on top).

    Args:
        rgb: (H, W, 3) float32 in [0, 1].
        masks: (N, H, W) bool.
        colours: N palette indices.
        ignore: (H, W) bool pixels painted grey last, or None.

    Returns:
        (H, W, 3) float32 in [0, 1], a new array.
    """
    out = rgb.copy()
    for m, c in zip(masks, colours):
        col = palette(int(c))
        out[m] = (1.0 - ALPHA) * out[m] + ALPHA * col
        out[_outline(m)] = col
    if ignore is not None:
        out[ignore] = np.asarray(VOID_RGB, dtype=np.float32) / 255.0
    return out


def _to_pil(rgb: np.ndarray, scale: int) -> Image.Image:
    """(H, W, 3) float in [0, 1] → RGB image upscaled ×``scale`` with nearest neighbour."""
    arr = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    return Image.fromarray(arr)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.load_default()
    except Exception:  # no bundled font in this Pillow build: draw without text
        return None


def _label(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str,
           font: ImageFont.ImageFont | ImageFont.FreeTypeFont | None,
           fill: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Small text on a black box (readable on any background), kept inside the panel
    whose top-left is left to the caller."""
    if font is None:
        return
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
    draw.rectangle((x0 - 1, y0 - 1, x1 + 1, y1 + 1), fill=(0, 0, 0))
    draw.text(xy, text, fill=fill, font=font)


def _sample_rgb(s: Sample) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from the sample's (3, H, W) image."""
    img = s.image.detach().float().cpu().clamp(0, 1)
    return img.permute(1, 2, 0).numpy().astype(np.float32)


def _fit(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Masks (N, h, w) resized with nearest neighbour to ``hw`` (unchanged if equal)."""
    if masks.shape[1:] == hw:
        return masks
    t = torch.from_numpy(masks[None].astype(np.uint8))
    return torch.nn.functional.interpolate(t, size=hw, mode="nearest")[0].numpy().astype(bool)


def qualitative(dataset: Sequence[Sample], preds: Sequence[ImagePrediction], n: int = 4,
                scale: int = 2) -> Image.Image:
    """Fig. 7-style grid: input | ground truth | prediction, one row per image.

    The rows are the first ``n`` items of ``dataset``; each is matched to the prediction
    with the same ``image_id`` (a row without one shows "no prediction"). Predicted
    masks carry their predicted IoU at their top-left corner; the prediction panel
    carries the image score ``S`` (Eq. 2) and, when known, the true image IoU.

    Args:
        dataset: items are `Sample`s (image (3, H, W) float in [0, 1], masks (K, H, W)
            bool, ignore (H, W) bool), e.g. the test split.
        preds: `basis.infer.predict` output for (at least) those images.
        n: number of rows (fewer if the dataset is smaller).
        scale: integer nearest-neighbour upscaling of every panel.

    Returns:
        RGB image of size (3·W·scale, n·H·scale), W and H the largest image width and
        height among the rows (smaller images sit top-left on a dark panel).

    Raises:
        ValueError: ``n`` or ``scale`` < 1, or an empty dataset.
    """
    if n < 1 or scale < 1:
        raise ValueError(f"n={n} and scale={scale} must be >= 1")
    rows = [dataset[i] for i in range(min(n, len(dataset)))]
    if not rows:
        raise ValueError("qualitative: the dataset is empty")
    by_id = {int(p.image_id): p for p in preds}
    cell_h = max(int(s.image.shape[-2]) for s in rows) * scale
    cell_w = max(int(s.image.shape[-1]) for s in rows) * scale
    grid = Image.new("RGB", (3 * cell_w, len(rows) * cell_h), BACKGROUND_RGB)
    draw = ImageDraw.Draw(grid)
    font = _font()
    for r, s in enumerate(rows):
        y = r * cell_h
        rgb = _sample_rgb(s)
        hw = (rgb.shape[0], rgb.shape[1])
        gt = s.masks.detach().cpu().numpy().astype(bool).reshape(-1, *hw)
        ignore = s.ignore.detach().cpu().numpy().astype(bool)
        grid.paste(_to_pil(rgb, scale), (0, y))
        grid.paste(_to_pil(overlay(rgb, gt, range(gt.shape[0]), ignore), scale), (cell_w, y))
        _label(draw, (2, y + 1), f"id {int(s.image_id)}", font)
        p = by_id.get(int(s.image_id))
        if p is None:
            grid.paste(_to_pil(rgb, scale), (2 * cell_w, y))
            _label(draw, (2 * cell_w + 2, y + 1), "no prediction", font)
            continue
        pm = _fit(decode(p, min_pixels=0)[0].numpy(), hw)
        grid.paste(_to_pil(overlay(rgb, pm, match_colours(pm, gt)), scale), (2 * cell_w, y))
        for m, iou in zip(pm, p.iou_pred):
            ys, xs = np.nonzero(m)
            if ys.size:
                _label(draw, (2 * cell_w + int(xs.min()) * scale,
                              y + int(ys.min()) * scale), f"{iou:.2f}", font)
        caption = f"S={p.image_score:.2f}"
        if p.image_iou_true is not None:
            caption += f" true {p.image_iou_true:.2f}"
        if font is not None:
            th = int(draw.textbbox((0, 0), caption, font=font)[3])
            _label(draw, (2 * cell_w + 2, y + cell_h - th - 2), caption, font,
                   fill=(255, 255, 0))
    # thin separators between panels and rows, drawn over the panel edges so the size
    # stays exactly 3·W × n·H
    for c in (1, 2):
        draw.line([(c * cell_w, 0), (c * cell_w, grid.height - 1)], fill=(255, 255, 255))
    for r in range(1, len(rows)):
        draw.line([(0, r * cell_h), (grid.width - 1, r * cell_h)], fill=(255, 255, 255))
    return grid


def save_qualitative(path: str | os.PathLike[str], image: Image.Image) -> Path:
    """Write ``image`` as a PNG at ``path`` atomically (temp file in the same folder,
    then ``os.replace``), creating the folder if needed.

    Returns:
        The final path.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final
