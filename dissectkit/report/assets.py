"""Probe-image assets for the HTML report: thumbnails, activation heatmaps and mask outlines.

Thumbnails and outlines are files written once per probe image (or image + concept), however
many neurons show them. Heatmaps are tiny PNGs at the activation map's own resolution, inlined
as data URIs and stretched over the thumbnail by the browser (bilinear).
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.imaging import as_array, minmax_unit, to_pil

MAX_MAP_SIDE = 32


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
    """A PNG file of an ``HxW`` (grey), ``HxWx3`` (RGB) or ``HxWx4`` (RGBA) uint8 array.

    Written directly (zlib, filter 0): for the many tiny heatmaps this is several times faster
    than going through PIL per image.
    """
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
    """``[K, n, h, w]`` -> the same scaled to [0, 1] by each neuron's min/max over its n maps."""
    flat = heat.reshape(heat.shape[0], -1)
    lo = flat.min(axis=1)[:, None, None, None]
    hi = flat.max(axis=1)[:, None, None, None]
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip((heat - lo) / span, 0.0, 1.0).astype(np.float32)


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


def display_image(image: Any):
    """An RGB PIL image for display; 16-bit and float data are min-max stretched (e.g. 12-bit DICOM)."""
    arr = as_array(image)
    if arr.dtype != np.uint8:
        arr = np.round(minmax_unit(arr) * 255.0).astype(np.uint8)
    return to_pil(arr, "RGB")


class ImageAssets:
    """Reads each needed probe image once; writes its thumbnail and mask outlines once."""

    def __init__(self, probe: Any, folder: Path, rel: str, thumb_size: int = 112) -> None:
        self.probe = probe
        self.folder = folder
        self.rel = rel
        self.thumb_size = thumb_size
        self.thumbs: dict[int, tuple[str, int, int]] = {}
        self.masks: dict[int, dict[str, np.ndarray]] = {}
        self.outlines: dict[tuple[int, str], str] = {}
        self.ids: dict[int, str] = {}
        self.errors: dict[int, str] = {}

    def thumb(self, index: int) -> tuple[str, int, int] | None:
        """``(relative path, width, height)`` of image ``index``'s thumbnail, or ``None`` if unreadable."""
        if index in self.thumbs:
            return self.thumbs[index]
        if index in self.errors:
            return None
        from dissectkit.errors import DissectkitError

        try:
            item = self.probe[index]
            pil = display_image(item.image)
        except DissectkitError as exc:
            self.errors[index] = str(exc)
            return None
        scale = self.thumb_size / max(pil.width, pil.height)
        shown = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))  # small images scaled up
        pil.thumbnail((self.thumb_size, self.thumb_size))
        name = f"img{index:06d}.jpg"
        (self.folder / "thumbs").mkdir(parents=True, exist_ok=True)
        pil.save(self.folder / "thumbs" / name, format="JPEG", quality=85)
        self.thumbs[index] = (f"{self.rel}/thumbs/{name}", shown[0], shown[1])
        self.ids[index] = str(item.id)
        self.masks[index] = {str(c): np.asarray(m).astype(bool) for c, m in (item.masks or {}).items()}
        return self.thumbs[index]

    def mask_concepts(self, index: int) -> list[str]:
        return sorted(self.masks.get(index, {}))

    def outline(self, index: int, concept: str) -> str | None:
        """Relative path of the outline of ``concept``'s mask on image ``index`` (written once)."""
        key = (index, concept)
        if key in self.outlines:
            return self.outlines[key]
        mask = self.masks.get(index, {}).get(concept)
        thumb = self.thumbs.get(index)
        if mask is None or thumb is None or mask.ndim != 2 or not mask.any():
            return None
        from PIL import Image

        name = f"img{index:06d}-{slug(concept, 32)}-{len(self.outlines)}.png"
        (self.folder / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(outline(mask, (thumb[1], thumb[2]), (0, 255, 255))).save(self.folder / "masks" / name)
        self.outlines[key] = f"{self.rel}/masks/{name}"
        return self.outlines[key]


def top_images(activations: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``[K, n]`` and values of each neuron's ``n`` most activating images (``A: [N, K]``)."""
    import torch

    acts = torch.as_tensor(activations).detach().float().cpu()
    n = min(n, acts.shape[0])
    vals, idx = torch.topk(acts.T, n, dim=1)
    return idx.numpy(), vals.numpy()


def constant_units(activations: Any) -> np.ndarray:
    """Boolean ``[K]``: neurons whose activation is the same on every probe image (dead)."""
    import torch

    acts = torch.as_tensor(activations).detach().float().cpu()
    return (acts.amax(dim=0) == acts.amin(dim=0)).numpy()


def gather_heatmaps(spatial_maps: Any, target: str, layer: str, idx: np.ndarray, chunk: int = 32) -> np.ndarray | None:
    """``[K, n, h, w]`` maps of every neuron on its own top images, from batched spatial-map calls.

    The union of top images is processed ``chunk`` images at a time; maps larger than
    ``MAX_MAP_SIDE`` are average-pooled down (the browser upsamples them anyway).
    """
    import torch
    import torch.nn.functional as F

    k_count, n = idx.shape
    images = np.unique(idx)
    heat: np.ndarray | None = None
    units = np.arange(k_count)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        maps = spatial_maps(target, layer, [int(i) for i in part])
        if maps is None:
            return None
        maps = torch.as_tensor(maps).detach().float().cpu()
        if maps.ndim != 4:
            return None
        h, w = maps.shape[-2:]
        if max(h, w) > MAX_MAP_SIDE:
            maps = F.adaptive_avg_pool2d(maps, (min(h, MAX_MAP_SIDE), min(w, MAX_MAP_SIDE)))
        if heat is None:
            heat = np.zeros((k_count, n) + tuple(maps.shape[-2:]), dtype=np.float32)
        pos = np.searchsorted(part, idx)  # position of each (k, j) image inside this chunk
        inside = (pos < len(part)) & (part[np.minimum(pos, len(part) - 1)] == idx)
        ks, js = np.nonzero(inside)
        if len(ks):
            heat[ks, js] = maps.numpy()[pos[ks, js], units[ks]]
    return heat
