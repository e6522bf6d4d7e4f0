"""Raw probe images -> arrays and PIL images, with one clear error for unsupported input.

Accepted: a PIL image, or a numpy array ``HxW`` / ``HxWx1`` / ``HxWx3`` / ``HxWx4`` of uint8,
uint16 or float (floats are taken as intensities; they are not assumed to lie in [0, 1]).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dissectkit.errors import DataError

SUPPORTED = "a PIL image or a numpy array HxW / HxWxC (C = 1, 3 or 4) of uint8, uint16 or float"


def as_array(image: Any) -> np.ndarray:
    """The image as a numpy array ``HxW`` or ``HxWxC`` (dtype kept: uint8, uint16 or float32)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image)
            return arr.astype(np.uint16) if image.mode.startswith("I;16") else arr.astype(np.float32)
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise DataError(f"Unsupported image of type {type(image).__name__}; expected {SUPPORTED}.")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or min(arr.shape[:2]) < 1:
        raise DataError(f"Unsupported image array of shape {arr.shape}; expected {SUPPORTED}.")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError("Image array contains NaN or inf values.")
        return arr.astype(np.float32, copy=False)
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != bool and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"Image array of dtype {arr.dtype} has values outside 0..65535; expected {SUPPORTED}.")
        return arr.astype(np.uint16 if arr.dtype != bool else np.uint8) * (255 if arr.dtype == bool else 1)
    raise DataError(f"Unsupported image dtype {arr.dtype}; expected {SUPPORTED}.")


def to_unit_float(image: Any) -> np.ndarray:
    """Float32 in [0, 1]: uint8 / 255, uint16 / 65535; floats min-max scaled only if outside [0, 1]."""
    arr = as_array(image)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def minmax_unit(image: Any) -> np.ndarray:
    """Float32 scaled to [0, 1] by the image's own min and max (Mammo-CLIP style)."""
    arr = as_array(image).astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def to_pil(image: Any, mode: str = "RGB"):
    """A PIL image in ``mode`` (``"RGB"`` or ``"L"``); 16-bit and float data are scaled to 8 bits."""
    from PIL import Image

    if isinstance(image, Image.Image) and image.mode in ("L", "RGB"):
        return image.convert(mode) if image.mode != mode else image
    arr = as_array(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(to_unit_float(arr) * 255.0), 0, 255).astype(np.uint8)
    pil = Image.fromarray(arr)
    return pil.convert(mode) if pil.mode != mode else pil


def gray_or_rgb(arr: np.ndarray, channels: int = 3) -> np.ndarray:
    """``HxW`` or ``HxWx3`` -> ``HxWx channels`` (grayscale repeated, or RGB averaged to one channel)."""
    if channels == 3:
        return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr
    return arr if arr.ndim == 2 else arr.mean(axis=2).astype(arr.dtype)
