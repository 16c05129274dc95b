"""Version 2 of the synthetic generator: learnable difficulty that varies like VOC's.

Selected by ``SyntheticConfig(version=2)``; `basis.data.synthetic.SyntheticShapes` calls
`DrawerV2.draw`. Version 1 made its hard cases unlearnable (touching same-class instances
told apart by ±12 % brightness only; classes given away by a flat colour; a void band
covering a fifth of the object pixels at 64 px). Here:

- Every image draws a latent difficulty ``d`` (uniform in ``difficulty_range``) that
  drives, together, the object count, the object size (small objects), occlusion and
  touching placements, distractor clutter (unlabelled bars and rings behind the
  objects), contrast to the background and noise. Its relative position ``u`` in the
  range sets the count, so the count statistics keep the configured means
  (VOC: 2.8 objects, ~1.5 classes per image) whatever the range.
- The class is shape × texture (5 shapes × 4 textures: 20 distinct classes); the colour
  is drawn from a palette of 8 with a class preference (3 preferred entries, each shared
  by several classes, 25 % of instances off-preference) and jittered, so colour alone
  does not give the class away.
- Same-class instances can be told apart: every instance has its own texture phase and
  orientation, its own shading gradient and a thin dark border along its outline, so the
  visible boundary between two touching instances is always the top one's border.
- The void band (``Sample.ignore``; VOC's 255) is ``round(void_width · image_size)`` px
  wide (1 px at 64, 2 at 128, 4 at 256) and lies on the outer side of each visible
  region: on the background around an object and on the occluded object where two meet,
  so it is a small share of the object pixels.
- Sizes, texture periods, border width and the minimal visible area scale with the
  image side, so an image looks the same at every resolution up to sampling.

Everything is drawn from the ``rng`` given to `DrawerV2.draw`, so an item stays a pure
function of ``(seed, image_id)``.
"""
from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage, stats

SHAPES_V2 = ("ellipse", "rectangle", "triangle", "diamond", "cross")
TEXTURES_V2 = ("flat", "stripes", "checker", "dots")
DISTRACTORS = ("bar", "ring")
N_PALETTE = 8
#: (hue, saturation, value) of the palette entries colours are drawn from.
PALETTE = tuple(((k / N_PALETTE + 0.03) % 1.0, 0.8 if k % 2 else 0.55, 0.9 if k % 3 else 0.7)
                for k in range(N_PALETTE))


def class_appearance(c: int) -> tuple[str, str, tuple[int, ...]]:
    """Shape, texture and preferred palette entries of class ``c`` (1-based).

    Classes 1..20 are distinct shape × texture pairs; beyond 20 the pairs repeat and only
    the colour preference differs. The preferred entries come from a fixed generator, so
    they never depend on a data seed.
    """
    shape = SHAPES_V2[(c - 1) % len(SHAPES_V2)]
    texture = TEXTURES_V2[((c - 1) // len(SHAPES_V2)) % len(TEXTURES_V2)]
    pref = np.random.default_rng(7919 + c).choice(N_PALETTE, size=3, replace=False)
    return shape, texture, tuple(int(p) for p in pref)


def _truncated_mean(lam: np.ndarray, cap: int) -> np.ndarray:
    """E[min(1 + Poisson(lam), cap)] for each rate in ``lam``."""
    j = np.arange(cap)  # 1 + j objects for j < cap - 1, the rest capped
    p = stats.poisson.pmf(j[None, :], lam[:, None])
    p[:, -1] = 1.0 - p[:, :-1].sum(1)
    return (p * np.minimum(1 + j, cap)[None, :]).sum(1)


@lru_cache(maxsize=32)
def drawer_for(cfg: Any) -> "DrawerV2":
    """The (stateless, shared) drawer of a config: its calibration takes ~20 ms, and
    datasets are rebuilt often (`SyntheticShapes.subset`)."""
    return DrawerV2(cfg)


class DrawerV2:
    """Draws version-2 images for one `SyntheticConfig` (see the module docstring).

    Args:
        cfg: a `basis.data.synthetic.SyntheticConfig` with ``version == 2``.
    """

    #: relative positions ``u`` used to calibrate the count rates at construction.
    _U = np.linspace(0.0, 1.0, 101)

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        n = cfg.image_size
        self.n = n
        self.scale = n / 64.0
        self.border_px = max(1, int(round(self.scale)))
        self.min_visible = max(4, int(round(cfg.min_visible * self.scale ** 2)))
        w = int(round(cfg.void_width * n)) if cfg.void_width > 0 else 0
        self.void_px = max(1, w) if cfg.void_width > 0 else 0
        self._classes = {c: class_appearance(c) for c in range(1, cfg.n_classes + 1)}
        self._calibrate()

    def _calibrate(self) -> None:
        """Rates for the counts, so that truncation at ``max_objects`` and the spread of
        the object-count rate over the difficulty keep the configured means."""
        cfg = self.cfg
        shape = 0.3 + 1.4 * self._U  # the count rate's profile over difficulty, mean 1
        target = max(min(cfg.mean_objects, cfg.max_objects), 1.0)
        lo, hi = 0.0, 4.0 * max(target, 1.0)
        for _ in range(50):
            s = 0.5 * (lo + hi)
            lo, hi = (s, hi) if _truncated_mean(s * shape, cfg.max_objects).mean() < target \
                else (lo, s)
        self._lam_objects = 0.5 * (lo + hi) * shape  # indexed by round(100 u)
        # classes: m = min(k, 1 + Poisson(lam_c)); E[m] over k's distribution and u
        cap = cfg.max_objects
        j = np.arange(cap)
        pk = stats.poisson.pmf(j[None, :], self._lam_objects[:, None])
        pk[:, -1] = 1.0 - pk[:, :-1].sum(1)  # P(k = 1 + j), capped

        def mean_classes(lam_c: float) -> float:
            pc = stats.poisson.pmf(j, lam_c)
            pc[-1] = 1.0 - pc[:-1].sum()
            m = np.minimum(1 + j[:, None], 1 + j[None, :])  # (k - 1, classes - 1)
            return float((pk @ (m * pc[None, :]).sum(1)).mean())

        want = min(max(cfg.mean_classes, 1.0), cfg.n_classes)
        lo, hi = 0.0, 20.0
        for _ in range(50):
            s = 0.5 * (lo + hi)
            lo, hi = (s, hi) if mean_classes(s) < want else (lo, s)
        self._lam_classes = 0.5 * (lo + hi)

    # -- one image ------------------------------------------------------------------------

    def draw(self, rng: np.random.Generator) -> dict[str, Any]:
        """One image.

        Returns:
            dict with ``image`` (H, W, 3) float32 in [0, 1], ``owner`` (H, W) int64 (index
            of the visible instance, -1 background), ``labels`` [int] per instance,
            ``ignore`` (H, W) bool void band, ``border`` (H, W) bool (the visible dark
            outlines) and ``difficulty`` (the latent d).
        """
        cfg, n = self.cfg, self.n
        lo, hi = cfg.difficulty_range
        d = float(rng.uniform(lo, hi))
        u = (d - lo) / (hi - lo) if hi > lo else 0.5
        lam = self._lam_objects[int(round(100 * min(max(u, 0.0), 1.0)))]
        k = min(1 + int(rng.poisson(lam)), cfg.max_objects)
        m = min(k, 1 + int(rng.poisson(self._lam_classes)), cfg.n_classes)
        classes = rng.choice(np.arange(1, cfg.n_classes + 1), size=m, replace=False)
        labels = np.concatenate([classes, rng.choice(classes, size=k - m)])
        rng.shuffle(labels)

        image, bg_mean = self._background(rng)
        border = np.zeros((n, n), dtype=bool)
        n_distract = int(rng.poisson(cfg.clutter * d))
        for _ in range(n_distract):
            self._distractor(image, rng, d)

        owner = np.full((n, n), -1, dtype=np.int64)
        occlude = cfg.allow_occlusion and rng.random() < 0.15 + 0.85 * d
        p_near = 0.75 * d
        # VOC-like sizes: easy images hold big objects (often cut by the image edge),
        # hard ones small objects
        a_hi = max(cfg.max_size / np.sqrt(k) * (1.6 - 0.9 * d), cfg.min_size * 1.5)
        a_lo = cfg.min_size * (1.0 - 0.3 * d)
        vis = np.zeros(0, dtype=np.int64)
        areas: list[int] = []
        kept: list[int] = []
        centres: list[tuple[float, float, float]] = []
        for lab in labels:
            lab = int(lab)
            kind, texture, pref = self._classes[lab]
            for _attempt in range(12):
                a = float(rng.uniform(a_lo, a_hi)) * n
                if kept and rng.random() < p_near:
                    same = [i for i, c in enumerate(kept) if c == lab]
                    pick = (same if same and rng.random() < 0.7 else range(len(kept)))
                    j = int(rng.choice(list(pick)))
                    cx0, cy0, a0 = centres[j]
                    ang = rng.uniform(0, 2 * np.pi)
                    dist = (a0 + a) * rng.uniform(0.55, 1.05)
                    cx = float(np.clip(cx0 + dist * np.cos(ang), 0.05 * n, 0.95 * n))
                    cy = float(np.clip(cy0 + dist * np.sin(ang), 0.05 * n, 0.95 * n))
                else:
                    cx, cy = (float(v) for v in rng.uniform(0.1 * n, 0.9 * n, size=2))
                sl, local, uv = self._shape(kind, cx, cy, a, rng)
                area = int(local.sum())
                if area < self.min_visible:
                    continue
                under = owner[sl][local]
                under = under[under >= 0]
                if under.size and not occlude:
                    continue
                new_vis = vis - np.bincount(under, minlength=len(kept))
                need = np.maximum(self.min_visible, cfg.min_visible_frac * np.asarray(areas))
                if (new_vis < need).any():
                    continue
                vis = np.append(new_vis, area)
                areas.append(area)
                owner[sl][local] = len(kept)
                kept.append(lab)
                centres.append((cx, cy, a))
                colour = self._colour(rng, pref, d, bg_mean)
                edge = self._paint(image[sl], local, uv, a, texture, colour, rng, d)
                border[sl][local] = edge[local]
                break

        noise = cfg.noise_range[0] + (cfg.noise_range[1] - cfg.noise_range[0]) * float(
            np.clip(d + rng.normal(0.0, 0.1), 0.0, 1.0))
        image += noise * rng.standard_normal(size=image.shape, dtype=np.float32)
        np.clip(image, 0.0, 1.0, out=image)
        return {"image": image, "owner": owner, "labels": kept, "ignore": self._void(owner),
                "border": border, "difficulty": d}

    # -- parts ----------------------------------------------------------------------------

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) float32 desaturated gradient plus blotches, and its mean colour."""
        n = self.n
        c0 = rng.uniform(0.15, 0.6, size=3).astype(np.float32)
        c0 = 0.5 * c0 + 0.5 * c0.mean()
        ang = rng.uniform(0, 2 * np.pi)
        axis = np.arange(n, dtype=np.float32) / np.float32(n)
        ramp = np.float32(np.cos(ang)) * axis[None, :] + np.float32(np.sin(ang)) * axis[:, None]
        ramp -= ramp.mean()
        block = max(2, n // 8)
        coarse = 0.06 * rng.standard_normal(size=(n // block + 1, n // block + 1, 3),
                                            dtype=np.float32)
        img = np.repeat(np.repeat(coarse, block, 0), block, 1)[:n, :n]
        img += c0[None, None, :]
        img += np.float32(0.15) * ramp[..., None]
        return img, c0

    def _frame(self, cx: float, cy: float, r: float, th: float):
        """The bounding-box slice around (cx, cy) with radius r (1 px margin inside the
        image) and the rotated coordinates (u, v) of its pixel centres."""
        n = self.n
        y0, y1 = max(0, int(cy - r) - 1), min(n, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(n, int(cx + r) + 2)
        x = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
        y = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
        c, s = np.float32(np.cos(th)), np.float32(np.sin(th))
        return (slice(y0, y1), slice(x0, x1)), (c * x + s * y, -s * x + c * y)

    def _shape(self, kind: str, cx: float, cy: float, a: float, rng: np.random.Generator):
        """A class shape: its slice, its (h, w) bool mask there, and the (u, v) frame."""
        th = rng.uniform(0, np.pi)
        lo, hi = {"ellipse": (0.6, 1.0), "rectangle": (0.45, 0.8), "diamond": (0.4, 0.6),
                  "cross": (0.28, 0.38), "triangle": (0.7, 1.0)}[kind]
        b = a * rng.uniform(lo, hi)
        # the farthest point from the centre: a corner for rectangle, cross and triangle
        r = a if kind in ("ellipse", "diamond") else float(np.hypot(a, b))
        sl, (u, v) = self._frame(cx, cy, r, th)
        if kind == "ellipse":
            mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        elif kind == "rectangle":
            mask = (np.abs(u) <= a) & (np.abs(v) <= b)
        elif kind == "diamond":
            mask = np.abs(u) / a + np.abs(v) / b <= 1.0
        elif kind == "cross":  # arms of half-width b
            mask = ((np.abs(u) <= a) & (np.abs(v) <= b)) | ((np.abs(v) <= a) & (np.abs(u) <= b))
        else:  # triangle with vertices (a, 0), (-a, b), (-a, -b) in the rotated frame
            mask = (u >= -a) & (b * (a - u) - 2 * a * np.abs(v) >= 0)
        return sl, mask, (u, v)

    def _colour(self, rng: np.random.Generator, pref: tuple[int, ...], d: float,
                bg: np.ndarray) -> np.ndarray:
        """(3,) float32: a jittered palette colour, pulled towards the background by up to
        60 % on the hardest images."""
        k = pref[int(rng.integers(len(pref)))] if rng.random() < 0.75 \
            else int(rng.integers(N_PALETTE))
        h, s, v = PALETTE[k]
        h = (h + rng.uniform(-0.04, 0.04)) % 1.0
        s = min(1.0, s * rng.uniform(0.75, 1.15))
        v = min(1.0, v * rng.uniform(0.75, 1.1))
        rgb = np.asarray(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)
        alpha = d * rng.uniform(0.2, 0.6)
        return ((1 - alpha) * rgb + alpha * bg).astype(np.float32)

    def _texture(self, texture: str, u: np.ndarray, v: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray | None:
        """(h, w) float32 in [0, 1] (1 = darkened) with a per-instance phase and
        orientation, or None for a flat texture."""
        if texture == "flat":
            return None
        period = rng.uniform(3.5, 5.0) * self.scale
        phi = rng.uniform(0, np.pi)
        c, s = np.float32(np.cos(phi)), np.float32(np.sin(phi))
        p = (c * u + s * v) / period + rng.uniform(0, 1)
        q = (-s * u + c * v) / period + rng.uniform(0, 1)
        if texture == "stripes":
            return (np.sin(2 * np.pi * p) > 0).astype(np.float32)
        if texture == "checker":
            return ((np.floor(p) + np.floor(q)) % 2).astype(np.float32)
        return ((np.sin(2 * np.pi * p) * np.sin(2 * np.pi * q)) > 0.4).astype(np.float32)

    def _paint(self, region: np.ndarray, local: np.ndarray, uv, a: float, texture: str,
               colour: np.ndarray, rng: np.random.Generator, d: float,
               outline: bool = True) -> np.ndarray:
        """Paint one shape into ``region`` (h, w, 3, a view of the image) where ``local``.

        Returns:
            (h, w) bool: its dark border (within ``border_px`` of its outline; the image
            edge does not count as outline).
        """
        u, v = uv
        psi = rng.uniform(0, 2 * np.pi)
        shade = 1.0 + rng.uniform(0.08, 0.22) * (np.cos(psi) * u + np.sin(psi) * v) / a
        tex = self._texture(texture, u, v, rng)
        if tex is not None:
            shade = shade * (1.0 - rng.uniform(0.22, 0.35) * tex)
        if outline:
            inner = ndimage.binary_erosion(local, iterations=self.border_px, border_value=1)
            edge = local & ~inner
            shade = np.where(edge, rng.uniform(0.4, 0.6) + 0.2 * d, shade)
        else:
            edge = np.zeros_like(local)
        region[local] = colour[None, :] * shade[local][:, None].astype(np.float32)
        return edge

    def _distractor(self, image: np.ndarray, rng: np.random.Generator, d: float) -> None:
        """An unlabelled bar or ring on the background (behind every object)."""
        n = self.n
        kind = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
        cx, cy = (float(c) for c in rng.uniform(0.0, n, size=2))
        th = rng.uniform(0, np.pi)
        if kind == "bar":
            a = rng.uniform(0.1, 0.35) * n
            b = a * rng.uniform(0.06, 0.16)
            sl, (u, v) = self._frame(cx, cy, float(np.hypot(a, b)), th)
            mask = (np.abs(u) <= a) & (np.abs(v) <= b)
        else:
            a = rng.uniform(0.06, 0.2) * n
            b = a * rng.uniform(0.7, 1.0)
            sl, (u, v) = self._frame(cx, cy, a, th)
            r2 = (u / a) ** 2 + (v / b) ** 2
            mask = (r2 <= 1.0) & (r2 > rng.uniform(0.3, 0.55))
        if not mask.any():
            return
        k = int(rng.integers(N_PALETTE))
        h, s, val = PALETTE[k]
        rgb = np.asarray(colorsys.hsv_to_rgb(h, s * rng.uniform(0.6, 1.0),
                                             val * rng.uniform(0.7, 1.0)), np.float32)
        texture = TEXTURES_V2[int(rng.integers(len(TEXTURES_V2)))]
        self._paint(image[sl], mask, (u, v), a, texture, rgb, rng, d,
                    outline=bool(rng.random() < 0.5))

    def _void(self, owner: np.ndarray) -> np.ndarray:
        """(H, W) bool: pixels within ``void_px`` of a region painted later (an object
        over the background, a top object over an occluded one)."""
        if self.void_px <= 0:
            return np.zeros(owner.shape, dtype=bool)
        # Alternating 4- and 8-neighbourhood maxima grow an octagon, close to a disk.
        top = owner.astype(np.int16)
        low = top.copy()
        for step in range(self.void_px):
            prev = top.copy()
            if step % 2 == 0:
                np.maximum(top[1:], prev[:-1], out=top[1:])
                np.maximum(top[:-1], prev[1:], out=top[:-1])
                np.maximum(top[:, 1:], prev[:, :-1], out=top[:, 1:])
                np.maximum(top[:, :-1], prev[:, 1:], out=top[:, :-1])
            else:
                top = ndimage.maximum_filter(prev, size=3, mode="nearest")
        return top > low
