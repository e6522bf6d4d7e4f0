"""Probe-image assets for the HTML report: thumbnails and mask outlines written once per image (and
concept), heatmaps as tiny inline PNGs (docs/reports.md, "HTML report")."""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.imaging.raw import centre_indices, display_image


@dataclass
class Thumbnail:
    """A probe image ready for display: ``pixels`` (uint8, ``H x W`` or ``H x W x 3``, longest side
    at most the thumbnail size), the size it is shown at (``shown``: ``(w, h)``, small images scaled
    up) and its concept masks at that size."""

    pixels: np.ndarray
    shown: tuple[int, int]
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def make_thumbnail(item: Any, size: int) -> Thumbnail:
    """The thumbnail of a probe item (its image and masks)."""
    pil = display_image(item.image, keep_grey=True)
    scale = size / max(pil.width, pil.height)
    shown = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
    pil.thumbnail((size, size))
    masks = {}
    for concept, mask in (item.masks or {}).items():
        mask = np.asarray(mask)
        if mask.ndim == 2 and mask.any():
            masks[str(concept)] = nearest(mask.astype(bool, copy=False), shown)
    return Thumbnail(np.asarray(pil), shown, masks)


def nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D array resampled to ``size=(w, h)`` by nearest neighbour (``imaging.centre_indices``)."""
    h, w = mask.shape
    return mask[np.ix_(centre_indices(h, size[1]), centre_indices(w, size[0]))]


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe version of ``text`` (stable; collisions resolved by the caller)."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return (s or "x")[:limit]


def colormap_lut(name: str = "inferno") -> np.ndarray:
    """A ``256 x 3`` uint8 lookup table of a matplotlib colormap."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (np.asarray(cmap(np.linspace(0.0, 1.0, 256)))[:, :3] * 255).round().astype(np.uint8)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(arr: np.ndarray) -> bytes:
    """A PNG file of an ``HxW``, ``HxWx3`` or ``HxWx4`` uint8 array, written directly (zlib, filter 0):
    several times faster than PIL for the many tiny heatmaps."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = arr.shape[:2]
    colour = {2: 0, 3: 2}[arr.ndim] if arr.ndim == 2 or arr.shape[2] == 3 else 6
    rows = arr.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def png_data_uri(arr: np.ndarray) -> str:
    """A ``data:image/png`` URI of an ``HxW``, ``HxWx3`` or ``HxWx4`` uint8 array."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(arr)).decode("ascii")


def heatmap_rgba(maps: np.ndarray, lut: np.ndarray, alpha: float) -> np.ndarray:
    """``[n, h, w]`` values in [0, 1] -> ``[n, h, w, 4]`` uint8 (colour by LUT, opacity by value)."""
    idx = np.clip(np.round(maps * 255.0), 0, 255).astype(np.uint8)
    rgba = np.empty(maps.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = lut[idx]
    rgba[..., 3] = np.clip(np.round(maps * (255.0 * alpha)), 0, 255).astype(np.uint8)
    return rgba


def normalise_per_neuron(heat: np.ndarray) -> np.ndarray:
    """``[K, n, h, w]`` -> the same scaled to [0, 1] by each neuron's min/max over its shown maps
    (NaN marks a map not shown: ignored, and 0 in the result)."""
    flat = heat.reshape(heat.shape[0], -1)
    shown = ~np.isnan(flat)
    lo = np.where(shown, flat, np.inf).min(axis=1)
    hi = np.where(shown, flat, -np.inf).max(axis=1)
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
    span = np.where(hi > lo, hi - lo, 1.0)[:, None, None, None]
    return np.nan_to_num(np.clip((heat - lo[:, None, None, None]) / span, 0.0, 1.0)).astype(np.float32)


def outline(mask: np.ndarray, size: tuple[int, int], colour: tuple[int, int, int]) -> np.ndarray:
    """The boundary of a boolean mask resized (nearest) to ``size=(w, h)``, as RGBA (2 px wide)."""
    from PIL import Image

    small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    inner = small.copy()
    inner[1:, :] &= small[:-1, :]
    inner[:-1, :] &= small[1:, :]
    inner[:, 1:] &= small[:, :-1]
    inner[:, :-1] &= small[:, 1:]
    edge = small & ~inner
    thick = edge.copy()
    thick[1:, :] |= edge[:-1, :]
    thick[:, 1:] |= edge[:, :-1]
    rgba = np.zeros(small.shape + (4,), dtype=np.uint8)
    rgba[thick, :3] = colour
    rgba[thick, 3] = 255
    return rgba


class ImageAssets:
    """Thumbnails (one JPEG per probe image) and mask outlines (one PNG per image and concept); an image
    that cannot be read at report time is recorded in ``errors`` (a placeholder)."""

    def __init__(self, folder: Path, rel: str, thumb_size: int = 112) -> None:
        self.folder = folder
        self.rel = rel
        self.thumb_size = thumb_size
        self.thumbs: dict[int, tuple[str, int, int]] = {}
        self.masks: dict[int, dict[str, np.ndarray]] = {}
        self.outlines: dict[tuple[int, str], str] = {}
        self.outline_png: dict[tuple[int, str], bytes] = {}
        """The outline files' bytes by (image, concept): filled as they are made; a caller may give those made before."""
        self.errors: dict[int, str] = {}
        (folder / "thumbs").mkdir(parents=True, exist_ok=True)

    def add(self, index: int, item: Any) -> None:
        """Write the thumbnail of probe item ``index`` and keep its masks at thumbnail size."""
        self.add_thumbnail(index, make_thumbnail(item, self.thumb_size))

    def add_thumbnail(self, index: int, thumb: Thumbnail, jpeg: bytes | None = None) -> bytes:
        """Write a ready thumbnail of probe image ``index`` (e.g. one kept by the pass; ``jpeg``: its
        file, encoded before); returns the file's bytes."""
        if jpeg is None:
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(thumb.pixels).save(buffer, format="JPEG", quality=85)
            jpeg = buffer.getvalue()
        name = f"img{index:06d}.jpg"
        (self.folder / "thumbs" / name).write_bytes(jpeg)
        self.masks[index] = thumb.masks
        self.thumbs[index] = (f"{self.rel}/thumbs/{name}", thumb.shown[0], thumb.shown[1])
        return jpeg

    def fail(self, index: int, reason: str) -> None:
        self.errors[index] = reason

    def outline(self, index: int, concept: str) -> str | None:
        """Relative path of the outline of ``concept``'s mask on image ``index`` (written once)."""
        key = (index, concept)
        if key in self.outlines:
            return self.outlines[key]
        mask = self.masks.get(index, {}).get(concept)
        if mask is None:
            return None
        name = f"img{index:06d}-{slug(concept, 32)}-{len(self.outlines)}.png"
        if not self.outlines:
            (self.folder / "masks").mkdir(parents=True, exist_ok=True)
        data = self.outline_png.get(key)
        if data is None:
            data = self.outline_png[key] = png_bytes(outline(mask, (mask.shape[1], mask.shape[0]), (0, 255, 255)))
        (self.folder / "masks" / name).write_bytes(data)
        self.outlines[key] = f"{self.rel}/masks/{name}"
        return self.outlines[key]
