"""Mammo-CLIP's published DICOM -> PNG conversion, written from its description (docs/data.md).
OpenCV (``opencv-python-headless``) and the image are only touched inside the functions."""

from __future__ import annotations

from typing import Any

import numpy as np

SIZE = (1520, 912)  # (H, W) of Mammo-CLIP's PNGs
BORDER = 5
THRESHOLD = 40  # values <= THRESHOLD are background for ExtractBreast
BAND = 0.4  # the middle band: centre +- int(0.4 * length)


def minmax_uint8(arr: np.ndarray) -> np.ndarray:
    """``((x - min) / (max - min) * 255)`` truncated to ``uint8`` (float64); a constant image -> zeros."""
    x = np.asarray(arr, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return ((x - lo) / (hi - lo) * 255.0).astype(np.uint8)


def longest_runs(flags: np.ndarray) -> np.ndarray:
    """Indices of every run of consecutive True values whose length, as the published conversion counts
    it, is the maximum (all of them when several runs tie); all indices when no value is True.

    The published count measures a run from the nearest False on each side, and takes the first /
    last index as that boundary when the run reaches the edge: a run touching the first or the last
    index counts one shorter (each edge it touches), so it ties with an inner run one shorter than it."""
    flags = np.asarray(flags, dtype=bool)
    if not flags.any():
        return np.arange(len(flags))
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, stops = edges[0::2], edges[1::2]
    counted = (stops - starts) - (starts == 0) - (stops == len(flags))
    best = int(counted.max())
    return np.concatenate([np.arange(a, b) for a, b, n in zip(starts, stops, counted, strict=True) if n == best])


def _band(length: int) -> slice:
    mid = length // 2
    return slice(mid - int(BAND * length), mid + int(BAND * length))


def extract_breast(image8: np.ndarray, threshold: int = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """The ``ExtractBreast`` rule on a ``uint8`` ``HxW`` image: (row indices, column indices) to keep
    (docs/data.md, "Mammo-CLIP's PNG conversion")."""
    work = np.where(image8 <= threshold, 0, image8)
    rows_band = work[_band(work.shape[0]), :]
    cols = longest_runs(rows_band.max(axis=0) != rows_band.min(axis=0))
    kept = work[:, cols]
    cols_band = kept[:, _band(kept.shape[1])]
    rows = longest_runs(cols_band.max(axis=1) != cols_band.min(axis=1))
    return rows, cols


def breast_box(image8: np.ndarray, border: int = BORDER, threshold: int = THRESHOLD) -> tuple[int, int, int, int]:
    """Mammo-CLIP's breast region ``(top, bottom, left, right)`` in a ``uint8`` image: a ``border``-pixel
    frame dropped, then its ``ExtractBreast`` rule (:func:`extract_breast`)."""
    h, w = image8.shape[:2]
    b = border if h > 2 * border + 1 and w > 2 * border + 1 else 0
    rows, cols = extract_breast(image8[b : h - b, b : w - b], threshold)
    return b + int(rows[0]), b + int(rows[-1]) + 1, b + int(cols[0]), b + int(cols[-1]) + 1


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV ``INTER_AREA`` resize to ``size`` = (H, W) (any dtype OpenCV takes; 2-D or HxWxC)."""
    import cv2

    if tuple(image.shape[:2]) == tuple(size):
        return image
    return cv2.resize(np.ascontiguousarray(image), (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)


def minmax_uint8_float32(x: np.ndarray) -> np.ndarray:
    """The published chain on float32 pixels (what its reader returns for a rescaled image): ``x - min``,
    ``/ max``, ``* 255`` each in float32, truncated to ``uint8``; a constant image -> zeros."""
    x = np.asarray(x, dtype=np.float32)
    x = x - np.float32(x.min())
    top = np.float32(x.max())
    if top <= 0:
        return np.zeros(x.shape, np.uint8)
    return ((x / top) * np.float32(255)).astype(np.uint8)


def convert(image: np.ndarray, monochrome1: bool = False, size: tuple[int, int] = SIZE,
            rescale: tuple[float, float] | None = None) -> np.ndarray:
    """The Mammo-CLIP PNG (``uint8`` ``size``) of one greyscale mammogram ``HxW`` (an RGB image is
    averaged to grey first). ``monochrome1``: the stored pixels are MONOCHROME1 (inverted here).
    ``rescale``: the DICOM's (slope, intercept) when not the identity: the published reader applies
    them in float32 (``stored * slope + intercept``) and the min-max then runs in float32 too, which
    moves a few pixels by one level compared with the exact arithmetic.

    An image already inverted into a display range by a linear map (``dissectkit.imaging.dicom.read_dicom``
    with ``apply_voi=False`` shifts the stored values by whole bits) gives the same PNG as its
    stored pixels: min-max removes the scale and the offset (not the float32 rounding of a rescale)."""
    x = np.asarray(image)
    if x.ndim == 3:
        x = x.mean(axis=2)
    if rescale is not None:
        x = x.astype(np.float32) * np.float32(rescale[0]) + np.float32(rescale[1])
    h, w = x.shape
    if h > 2 * BORDER and w > 2 * BORDER:
        x = x[BORDER : h - BORDER, BORDER : w - BORDER]
    if rescale is not None:
        image8 = minmax_uint8_float32(np.float32(x.max()) - x if monochrome1 else x)
        rows, cols = extract_breast(image8)
        return resize_area(image8[np.ix_(rows, cols)], size)
    if monochrome1:
        x = x.max() - x.astype(np.float64 if x.dtype.kind == "f" else np.int64)
    image8 = minmax_uint8(x)
    rows, cols = extract_breast(image8)
    crop = image8[np.ix_(rows, cols)]
    return resize_area(crop, size)


def from_dicom(path: Any, frame: int = 0, size: tuple[int, int] = SIZE, max_pixels: int | None = None) -> np.ndarray:
    """The Mammo-CLIP PNG of one DICOM file, from its stored pixels (no modality / VOI LUT).
    Colour DICOMs are refused: the conversion is defined for greyscale mammograms."""
    from pathlib import Path

    from dissectkit.base.errors import DataError
    from dissectkit.imaging.dicom import read_stored_rescale

    stored, photometric, rescale = read_stored_rescale(Path(path), frame=frame, max_pixels=max_pixels)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(
            f"{path} is a {photometric or 'non-greyscale'} image; Mammo-CLIP's PNG conversion is defined for "
            "greyscale (MONOCHROME1/2) mammograms. Remove it from the folder to convert."
        )
    return convert(stored, monochrome1=photometric == "MONOCHROME1", size=size, rescale=rescale)
