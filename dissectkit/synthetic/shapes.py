"""A non-mammography synthetic task (the "general-data" regime): 1 to 3 shapes of ``SHAPE_CLASSES``
on a textured background, multi-hot labels, deterministic from (seed, index)."""

from __future__ import annotations

import math

import numpy as np

from dissectkit.synthetic.generator import DEFAULT_SIZE, pixel_grid, smooth_noise

SHAPE_CLASSES = ("circle", "square", "triangle", "ring", "cross", "stripes", "checkerboard", "star")


def shape_image(seed: int, index: int, size: tuple[int, int] = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 ``H x W`` scene and its multi-hot label over ``SHAPE_CLASSES``."""
    h, w = size
    rng = np.random.default_rng([seed, index, 7731])
    yy, xx = pixel_grid(h, w)
    img = rng.uniform(0.2, 0.5) + 0.12 * smooth_noise(rng, h, w, (16, 10))
    label = np.zeros(len(SHAPE_CLASSES), np.float32)
    for k in rng.choice(len(SHAPE_CLASSES), size=int(rng.integers(1, 4)), replace=False):
        label[k] = 1
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.15, 0.85) * h
        r = rng.uniform(0.1, 0.2) * w
        ang = rng.uniform(0, math.pi)
        u = (xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)
        v = -(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)
        d = np.hypot(u, v)
        name = SHAPE_CLASSES[k]
        if name == "circle":
            m = d < r
        elif name == "square":
            m = (np.abs(u) < r * 0.8) & (np.abs(v) < r * 0.8)
        elif name == "triangle":
            m = (v < r * 0.5) & (v > -r + 1.7 * np.abs(u))
        elif name == "ring":
            m = (d < r) & (d > 0.65 * r)
        elif name == "cross":
            m = ((np.abs(u) < 0.25 * r) | (np.abs(v) < 0.25 * r)) & (np.abs(u) < r) & (np.abs(v) < r)
        elif name == "stripes":
            m = (d < r) & (np.sin(u * 0.9) > 0)
        elif name == "checkerboard":
            m = (np.abs(u) < r) & (np.abs(v) < r) & ((np.floor(u / 5) + np.floor(v / 5)) % 2 == 0)
        else:  # star
            th = np.arctan2(v, u)
            m = d < r * (0.55 + 0.45 * np.cos(5 * th))
        level = rng.uniform(0.6, 1.0) if rng.random() < 0.6 else rng.uniform(0.0, 0.15)
        img = np.where(m, level, img)
    img = img + rng.standard_normal((h, w), dtype=np.float32) * 0.03
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), label
