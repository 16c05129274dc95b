"""Synthetic instance-segmentation data: coloured, textured shapes on a noisy background.

The default stand-in for VOC 2012 + SBD when no real data is at hand (laptop runs, tests,
the demo). Statistics follow the paper's VOC figures (section 3): on average 2.8 objects
and ~1.5 classes per image, 20 classes. Difficulty varies widely between images, because
the study selects images by their per-image segmentation quality: an image with one or
two big objects and little noise is easy, one with many small, mutually occluding objects
and strong noise is hard.

Every item is a pure function of ``(seed, image_id)``, so a dataset is reproducible from
its config and id list alone and any subset can be rebuilt in another process.

``SyntheticConfig.version`` picks the generator: 1 (the default, below, unchanged so old
sweeps reproduce bit for bit) or 2 (`basis.data.synthetic_v2`: learnable hard cases —
one per-image difficulty drives count, size, occlusion, clutter, contrast and noise;
class = shape × texture; touching same-class instances outlined; a thin void band).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from basis.data.base import InstanceDataset, Transform
from basis.data.synthetic_v2 import drawer_for
from basis.types import Sample

SHAPES = ("ellipse", "rectangle", "triangle", "diamond")
TEXTURES = ("flat", "stripes", "checker", "dots")
VERSIONS = (1, 2)


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic images are drawn.

    Attributes:
        image_size: side of the square images, in pixels.
        n_classes: number of object classes (ids 1..n_classes).
        mean_objects: target mean number of instances per image (VOC: 2.8).
        max_objects: most instances in one image.
        mean_classes: target mean number of distinct classes per image (VOC: ~1.5).
        min_size, max_size: range of an object's half-extent as a fraction of the image
            side; the upper end shrinks with the number of objects (1/sqrt(K)), so
            crowded images hold small objects.
        allow_occlusion: later objects may cover earlier ones; when False, a placement
            that overlaps an earlier object is redrawn.
        min_visible: fewest visible pixels an instance must keep, also as a fraction
            ``min_visible_frac`` of its unoccluded area; placements that would break
            either for any instance are redrawn, so no mask is empty or a sliver.
        noise_range: per-image Gaussian noise std range (image values in [0, 1]).
        ignore_band: width in pixels of the void band on each side of every object
            boundary (VOC-like); 0 gives an all-False ignore map. Version 1 only.
        version: the generator. 1 (the default, kept bit for bit so old sweeps
            reproduce) or 2, `basis.data.synthetic_v2`: a per-image difficulty drives
            count, size, occlusion, clutter, contrast and noise together; class = shape ×
            texture with colours shared across classes; same-class instances differ in
            texture phase, shading and a dark border. The fields below are version 2's.
        difficulty_range: (version 2) the per-image difficulty is uniform in this range
            of [0, 1]; narrow or shift it to make the whole set easier or harder. The
            count statistics (``mean_objects``, ``mean_classes``) hold for any range.
        clutter: (version 2) mean number of unlabelled distractors (bars, rings) behind
            the objects at difficulty 1; proportional to the difficulty.
        void_width: (version 2) width of the void band as a fraction of the image side
            (at least 1 px when > 0; 1/64: 1 px at 64, 2 at 128); 0 turns it off. It lies
            on the outer side of every visible region.
    """

    image_size: int = 64
    n_classes: int = 20
    mean_objects: float = 2.8
    max_objects: int = 6
    mean_classes: float = 1.5
    min_size: float = 0.07
    max_size: float = 0.42
    allow_occlusion: bool = True
    min_visible: int = 12
    min_visible_frac: float = 0.25
    noise_range: tuple[float, float] = (0.02, 0.14)
    ignore_band: int = 1
    version: int = 1
    difficulty_range: tuple[float, float] = (0.0, 1.0)
    clutter: float = 4.0
    void_width: float = 1 / 64

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"version={self.version!r}; one of {VERSIONS}")
        lo, hi = (float(x) for x in self.difficulty_range)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"difficulty_range={self.difficulty_range!r}; need "
                             "0 <= lo <= hi <= 1")
        # YAML and JSON give lists; keep the config hashable and its repr stable
        object.__setattr__(self, "difficulty_range", (lo, hi))
        object.__setattr__(self, "noise_range", tuple(float(x) for x in self.noise_range))
        if self.clutter < 0 or self.void_width < 0:
            raise ValueError("clutter and void_width must be >= 0")


def class_colour(c: int, n_classes: int) -> np.ndarray:
    """Base RGB colour of class ``c`` (1..n_classes): hues spread round the circle, with
    alternating saturation/value so neighbouring ids differ in more than hue.

    Returns:
        (3,) float32 in [0, 1].
    """
    h = ((c - 1) * 0.6180339887) % 1.0  # golden-ratio hue steps keep neighbours apart
    s = 0.85 if c % 2 else 0.55
    v = 0.95 if (c // 2) % 2 else 0.7
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


class SyntheticShapes(InstanceDataset):
    """A reproducible synthetic instance-segmentation dataset.

    Args:
        cfg: drawing parameters.
        seed: data seed; with an image id it fixes the item completely.
        ids: image ids of the items, in order (``self[i]`` has ``image_id == ids[i]``).
        transform: applied by ``__getitem__`` (see `basis.data.transforms`).
    """

    def __init__(self, cfg: SyntheticConfig, seed: int, ids: Sequence[int],
                 transform: Transform | None = None) -> None:
        self.cfg = cfg
        self.transform = transform
        self.seed = int(seed)
        self.ids = [int(i) for i in ids]
        n = cfg.image_size
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        self._yy, self._xx = yy + 0.5, xx + 0.5
        # Extra instances beyond the first are Poisson; truncation at max_objects and the
        # rare failed placement lower the mean slightly, accepted.
        self._lam_objects = max(cfg.mean_objects - 1.0, 0.0)
        p_multi = 1.0 - np.exp(-self._lam_objects)
        self._lam_classes = max(cfg.mean_classes - 1.0, 0.0) / max(p_multi, 1e-6)
        self._v2 = drawer_for(cfg) if cfg.version == 2 else None

    def load(self, i: int) -> Sample:
        return self.draw(self.ids[i])

    def subset(self, ids: Sequence[int]) -> "SyntheticShapes":
        """The same data restricted to (or extended to) the given image ids."""
        return SyntheticShapes(self.cfg, self.seed, ids, self.transform)

    # -- drawing -------------------------------------------------------------------------

    def draw(self, image_id: int) -> Sample:
        """Draw the image with id ``image_id`` (independent of the id list)."""
        if self._v2 is not None:
            return self._sample_v2(self.layers(image_id), image_id)
        cfg = self.cfg
        n = cfg.image_size
        rng = np.random.default_rng((self.seed, int(image_id)))

        k = min(1 + int(rng.poisson(self._lam_objects)), cfg.max_objects)
        m = min(k, 1 + int(rng.poisson(self._lam_classes)))
        classes = rng.choice(np.arange(1, cfg.n_classes + 1), size=m, replace=False)
        # Every chosen class appears at least once; the rest are drawn among them.
        labels = np.concatenate([classes, rng.choice(classes, size=k - m)])
        rng.shuffle(labels)

        image = self._background(rng)
        owner = np.full((n, n), -1, dtype=np.int64)  # index of the visible instance
        areas: list[int] = []
        kept: list[int] = []
        size_hi = max(cfg.max_size / np.sqrt(k), cfg.min_size * 1.5)
        for lab in labels:
            for _attempt in range(12):
                shape = self._shape(rng, size_hi)
                area = int(shape.sum())
                if area < cfg.min_visible:
                    continue
                if not cfg.allow_occlusion and (owner[shape] >= 0).any():
                    continue
                trial = owner.copy()
                trial[shape] = len(kept)
                vis = np.bincount(trial[trial >= 0].ravel(), minlength=len(kept) + 1)
                need = np.maximum(cfg.min_visible,
                                  cfg.min_visible_frac * np.asarray(areas + [area]))
                if (vis < need).any():
                    continue
                owner = trial
                areas.append(area)
                kept.append(int(lab))
                self._paint(image, shape, int(lab), rng)
                break

        noise = rng.uniform(*cfg.noise_range)
        image += noise * rng.standard_normal(size=image.shape, dtype=np.float32)
        image = np.clip(image, 0.0, 1.0)

        masks = owner[None] == np.arange(len(kept))[:, None, None]
        ignore = self._ignore(owner)
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            masks=torch.from_numpy(masks),
            labels=torch.tensor(kept, dtype=torch.int64),
            ignore=torch.from_numpy(ignore),
            image_id=int(image_id),
        )

    def layers(self, image_id: int) -> dict:
        """Version 2: the drawing's parts for image ``image_id`` — ``image`` (H, W, 3),
        ``owner`` (H, W) int64 (-1 background), ``labels``, ``ignore``, ``border`` (H, W)
        bool (the dark outlines) and ``difficulty`` — for tests and diagnostics."""
        if self._v2 is None:
            raise ValueError("layers() needs SyntheticConfig(version=2)")
        return self._v2.draw(np.random.default_rng((self.seed, 2, int(image_id))))

    @staticmethod
    def _sample_v2(parts: dict, image_id: int) -> Sample:
        owner = parts["owner"]
        k = len(parts["labels"])
        masks = owner[None] == np.arange(k)[:, None, None]
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(parts["image"].transpose(2, 0, 1))),
            masks=torch.from_numpy(masks),
            labels=torch.tensor(parts["labels"], dtype=torch.int64),
            ignore=torch.from_numpy(parts["ignore"]),
            image_id=int(image_id),
        )

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) float32: a dim, desaturated linear gradient plus blotchy noise."""
        n = self.cfg.image_size
        c0 = rng.uniform(0.15, 0.55, size=3).astype(np.float32)
        grey = c0.mean()
        c0 = 0.5 * c0 + 0.5 * grey
        ang = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(ang) * self._xx + np.sin(ang) * self._yy) / n
        img = c0[None, None, :] + 0.15 * (ramp - ramp.mean())[..., None]
        coarse = 0.06 * rng.standard_normal(size=(n // 8 + 1, n // 8 + 1, 3), dtype=np.float32)
        img = img + np.kron(coarse, np.ones((8, 8, 1), np.float32))[:n, :n]
        return img.astype(np.float32)

    def _shape(self, rng: np.random.Generator, size_hi: float) -> np.ndarray:
        """(H, W) bool mask of one randomly placed, rotated shape."""
        cfg = self.cfg
        n = cfg.image_size
        a = rng.uniform(cfg.min_size, size_hi) * n
        b = a * rng.uniform(0.55, 1.0)
        cx, cy = rng.uniform(0.1 * n, 0.9 * n, size=2)
        th = rng.uniform(0, np.pi)
        u = np.cos(th) * (self._xx - cx) + np.sin(th) * (self._yy - cy)
        v = -np.sin(th) * (self._xx - cx) + np.cos(th) * (self._yy - cy)
        kind = SHAPES[int(rng.integers(len(SHAPES)))]
        if kind == "ellipse":
            return (u / a) ** 2 + (v / b) ** 2 <= 1.0
        if kind == "rectangle":
            return (np.abs(u) <= a) & (np.abs(v) <= b)
        if kind == "diamond":
            return np.abs(u) / a + np.abs(v) / b <= 1.0
        # Triangle with vertices (a, 0), (-a, b), (-a, -b) in the rotated frame.
        return (u >= -a) & (b * (a - u) - 2 * a * np.abs(v) >= 0)

    def _paint(self, image: np.ndarray, shape: np.ndarray, label: int,
               rng: np.random.Generator) -> None:
        """Fill ``shape`` in ``image`` (H, W, 3, in place) with the class appearance."""
        n_classes = self.cfg.n_classes
        colour = class_colour(label, n_classes) * rng.uniform(0.85, 1.1)
        texture = TEXTURES[(label - 1) % len(TEXTURES)]
        period = 3.0 + (label % 3)
        x, y = self._xx[shape], self._yy[shape]  # texture only where it is painted
        if texture == "stripes":
            mod = np.sin(np.pi * (x + y) / period) > 0
        elif texture == "checker":
            mod = ((x // period) + (y // period)) % 2 == 0
        elif texture == "dots":
            mod = np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period) > 0.5
        else:
            mod = np.zeros(x.shape, dtype=bool)
        shade = np.where(mod, np.float32(0.78), np.float32(1.0))
        image[shape] = colour[None, :] * shade[:, None]

    def _ignore(self, owner: np.ndarray) -> np.ndarray:
        """(H, W) bool void band: pixels within ``ignore_band`` of a label change."""
        w = self.cfg.ignore_band
        if w <= 0:
            return np.zeros(owner.shape, dtype=bool)
        edge = np.zeros(owner.shape, dtype=bool)
        dy = owner[1:, :] != owner[:-1, :]
        dx = owner[:, 1:] != owner[:, :-1]
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        if w > 1:
            edge = ndimage.binary_dilation(edge, iterations=w - 1)
        return edge


def collate(samples: list[Sample]) -> dict:
    """Batch samples for a DataLoader.

    Returns:
        dict with ``images`` (B, 3, H, W) float32 stacked, and per-image lists
        ``masks`` [(K_b, H, W) bool], ``labels`` [(K_b,) int64], ``ignore`` [(H, W) bool],
        ``image_ids`` [int].
    """
    return {
        "images": torch.stack([s.image for s in samples]),
        "masks": [s.masks for s in samples],
        "labels": [s.labels for s in samples],
        "ignore": [s.ignore for s in samples],
        "image_ids": [s.image_id for s in samples],
    }
