"""Reading and writing the image files of the datasets (RGB images, palette PNGs).

Every failure becomes a `DataError` that names the file and says what is wrong.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from basis.data.base import DataError

VOID = 255


def voc_palette(n: int = 256) -> list[int]:
    """The PASCAL VOC colour map, flat ``[r0, g0, b0, r1, …]`` for ``n`` indices."""
    pal = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as (3, H, W) float32 in [0, 1]."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read image (corrupt or truncated?): {err}") from err
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div_(255.0)


def read_index_png(path: Path) -> np.ndarray:
    """A palette (or greyscale) label PNG as its (H, W) uint8 index map."""
    if not path.is_file():
        raise DataError(f"{path}: label PNG not found")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"{path}: label PNG has mode {im.mode!r}; expected a palette "
                                "('P') or greyscale ('L') PNG whose pixel values are label ids")
            arr = np.asarray(im)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read label PNG (corrupt or truncated?): {err}") from err
    return arr.astype(np.uint8, copy=False)


def write_index_png(path: Path, index: np.ndarray) -> None:
    """Write an (H, W) uint8 index map as a palette PNG with the VOC colour map."""
    im = Image.fromarray(np.ascontiguousarray(index.astype(np.uint8)))
    im.putpalette(voc_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def write_rgb(path: Path, image: torch.Tensor, quality: int = 98) -> None:
    """Write a (3, H, W) float image in [0, 1] (JPEG or PNG by the suffix).

    JPEGs are written without chroma subsampling: the synthetic images' pixel noise
    and thin textures lose ~8% per pixel with 4:2:0 and ~0.5% with 4:4:4 at quality 98.
    """
    arr = (image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(arr))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=quality, subsampling=0)
    else:
        im.save(path)


#: PIL modes that hold more than 8 bits per channel: refused by `probe_image`.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def probe_image(path: Path) -> tuple[int, int, str]:
    """Check that an image file can be read as the network reads it (`read_rgb`) →
    ``(height, width, mode)``.

    Greyscale, palette, RGBA and CMYK files are accepted (`read_rgb` converts them to
    RGB). Files of more than 8 bits per channel are refused: PIL would clip 16-bit
    greyscale to 255 and drop the low byte of 48-bit RGB, and the intended scaling is
    not known.

    Raises:
        DataError: naming the file: missing, unreadable, or 16/32-bit.
    """
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with open(path, "rb") as fh:
            head = fh.read(33)
        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
            im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: cannot read image (corrupt or truncated?): {err}") from err
    # byte 24 of a PNG is the bit depth of its IHDR chunk (48-bit RGB opens as "RGB")
    depth = head[24] if head.startswith(_PNG_SIGNATURE) and len(head) > 24 else 8
    if mode in WIDE_MODES or depth > 8:
        bits = depth if depth > 8 else (32 if mode in ("I", "F") else 16)
        raise DataError(f"{path}: {bits}-bit image (mode {mode}); "
                        "refused, save it as 8-bit RGB or greyscale (the scaling of "
                        "wider data is not known)")
    return int(h), int(w), str(mode)
