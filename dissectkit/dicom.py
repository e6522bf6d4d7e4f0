"""DICOM reading (pydicom + pylibjpeg decoders) and Mammo-CLIP's breast crop / PNG conversion.

``read_dicom`` returns the stored pixels after the modality LUT (rescale slope / intercept), the
VOI LUT or window (when present) and MONOCHROME1 inversion, as a ``uint16`` ``HxW`` array, so 16-bit
precision is kept until a model's own preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.errors import DataError

# Which PyPI package decodes which compressed transfer syntax (pydicom's pixel-data plugins).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE Lossless
}

# Mammo-CLIP's released conversion: output size (H, W), border crop and foreground threshold.
MAMMO_CLIP_SIZE = (1520, 912)
BORDER = 5
FOREGROUND = 40


def _syntax(ds: Any) -> tuple[str, str]:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return "(none)", "unknown transfer syntax"
    return str(uid), getattr(uid, "name", str(uid))


def read_dicom(path: str | Path, voi_lut: bool = True) -> np.ndarray:
    """Read one DICOM image as ``uint16`` ``HxW`` (modality LUT, VOI LUT / window, MONOCHROME1 inverted).

    Values are rounded; data that falls outside ``0..65535`` after the LUTs is shifted (negative
    minimum) or min-max scaled to that range. Raises :class:`DataError` naming the file, the
    transfer syntax and the decoder package when the pixels cannot be decoded.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error for this file
        raise DataError(f"Cannot read DICOM file {path}: {exc}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"DICOM file {path} has no pixel data (it may be a report or structured document).")
    uid, name = _syntax(ds)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        package = DECODER_PACKAGES.get(uid)
        fix = (
            f"install the decoder with `pip install {package}`" if package else "no installed decoder supports it"
        )
        raise DataError(
            f"Cannot decode the pixel data of {path}: transfer syntax {name} ({uid}); {fix}. ({exc})"
        ) from None
    if raw.ndim == 3 and int(getattr(ds, "SamplesPerPixel", 1)) == 1:
        raw = raw[0]  # multi-frame: the first frame
    arr = apply_modality_lut(raw, ds)
    if voi_lut and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        arr = apply_voi_lut(arr, ds, index=0)
    arr = np.asarray(arr)
    mono1 = str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    if np.issubdtype(arr.dtype, np.integer):  # fast path: no float LUT was applied
        if mono1:
            arr = arr.max() - arr
        if arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16, copy=False)
    arr = arr.astype(np.float64, copy=False)
    if mono1:
        arr = arr.max() - arr
    return to_uint16(arr)


def to_uint16(arr: np.ndarray) -> np.ndarray:
    """Round to ``uint16``: shift a negative minimum to 0, min-max scale when wider than 16 bits."""
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0:
        arr = arr - lo
        hi -= lo
    if hi > 65535:
        arr = arr * (65535.0 / hi)
    return np.clip(np.rint(arr), 0, 65535).astype(np.uint16)


def minmax_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale to ``uint8`` (Mammo-CLIP: ``(x - min) / (max - min) * 255``)."""
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return ((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """``[start, stop)`` of the longest run of True values (the whole range when there is none)."""
    if not flags.any():
        return 0, len(flags)
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, stops = edges[0::2], edges[1::2]
    best = int(np.argmax(stops - starts))
    return int(starts[best]), int(stops[best])


def breast_box(image8: np.ndarray, border: int = BORDER, threshold: int = FOREGROUND) -> tuple[int, int, int, int]:
    """Mammo-CLIP's breast region ``(top, bottom, left, right)`` in a ``uint8`` image.

    Crop a ``border``-pixel frame, take pixels above ``threshold`` as foreground, keep the longest
    run of columns holding foreground, then (inside it) the longest run of rows.
    """
    h, w = image8.shape[:2]
    b = border if h > 2 * border and w > 2 * border else 0
    inner = image8[b : h - b, b : w - b]
    fg = inner > threshold
    c0, c1 = _longest_run(fg.any(axis=0))
    r0, r1 = _longest_run(fg[:, c0:c1].any(axis=1))
    return b + r0, b + r1, b + c0, b + c1


def breast_crop(image: np.ndarray) -> np.ndarray:
    """Crop any-dtype ``HxW`` / ``HxWxC`` image to the breast box found on its uint8 min-max version."""
    top, bottom, left, right = breast_box(minmax_uint8(image))
    return image[top:bottom, left:right]


def mammo_clip_png(image: np.ndarray, size: tuple[int, int] = MAMMO_CLIP_SIZE) -> np.ndarray:
    """The Mammo-CLIP PNG of one (already MONOCHROME1-inverted) image: min-max uint8, breast box,
    resize to ``size`` = (H, W) with area interpolation (PIL's box filter = exact area averaging)."""
    from PIL import Image

    image8 = minmax_uint8(image)
    top, bottom, left, right = breast_box(image8)
    crop = image8[top:bottom, left:right]
    out = Image.fromarray(crop).resize((size[1], size[0]), resample=Image.Resampling.BOX)
    return np.asarray(out)
