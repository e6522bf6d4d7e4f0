"""DICOM reading (pydicom + pylibjpeg decoders) onto the raw-image contract of
:mod:`dissectkit.imaging.raw`: LUTs, MONOCHROME1 and the real bit depth as docs/data.md, "DICOM", states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.errors import DataError

# Which PyPI package decodes which compressed transfer syntax (pydicom's pylibjpeg plugin).
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
# pydicom decoding plugin -> the PyPI package that provides it
PLUGIN_PACKAGES = {"gdcm": "python-gdcm", "pyjpegls": "pyjpegls", "pillow": "pillow", "pylibjpeg": None}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _syntax(ds: Any) -> tuple[str, str]:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return "(none)", "unknown transfer syntax"
    return str(uid), getattr(uid, "name", str(uid))


def _decoder_state(uid: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(available plugins, missing plugins) of pydicom's decoder for ``uid``; None when no decoder exists."""
    from pydicom.pixels.decoders.base import get_decoder

    try:
        dec = get_decoder(uid)
    except NotImplementedError:
        return None
    missing = tuple(m.split(" ", 1)[0] for m in dec.missing_dependencies)
    return tuple(dec.available_plugins), missing


def _packages(uid: str, plugins: tuple[str, ...]) -> list[str]:
    out = []
    for p in plugins:
        pkg = PLUGIN_PACKAGES.get(p, p) or DECODER_PACKAGES.get(uid, "pylibjpeg")
        if pkg not in out:
            out.append(pkg)
    return out


def _decode_error(path: Path, ds: Any, exc: Exception) -> DataError:
    """The DataError for pixel data that pydicom could not decode: truncated, no decoder installed
    (naming the package), no decoder at all, or installed decoders failing on damaged data."""
    uid, name = _syntax(ds)
    detail = " ".join(str(exc).split())[:300]
    if uid == "(none)":
        return DataError(
            f"Cannot decode the pixel data of {path}: its file meta header has no Transfer Syntax UID "
            "(0002,0010). Rewrite the file with the transfer syntax set (pydicom: set "
            "ds.file_meta.TransferSyntaxUID, then ds.save_as(..., enforce_file_format=True))."
        )
    if "less than expected" in detail or "truncat" in detail.lower():
        return DataError(f"{path} is truncated: {detail}. Re-copy or re-download the file.")
    state = _decoder_state(uid)
    if state is None:
        return DataError(
            f"Cannot decode the pixel data of {path}: no decoder pydicom can use exists for transfer syntax "
            f"{name} ({uid}). Convert the file to an uncompressed syntax (e.g. dcmtk `dcmdjpeg` / gdcm "
            "`gdcmconv --raw`) or remove it from the probe set."
        )
    available, missing = state
    if not available:
        pkgs = " or ".join(_packages(uid, missing)) or DECODER_PACKAGES.get(uid, "a pydicom decoder plugin")
        return DataError(
            f"Cannot decode the pixel data of {path}: transfer syntax {name} ({uid}) needs a decoder that is "
            f"not installed; install it with `pip install {pkgs}`."
        )
    others = _packages(uid, missing)
    hint = f" Another decoder might read it: `pip install {' or '.join(others)}`." if others else ""
    return DataError(
        f"Cannot decode the pixel data of {path} (transfer syntax {name}, {uid}): the installed decoder(s) "
        f"{', '.join(available)} failed ({detail}). The file may be damaged.{hint}"
    )


def open_dicom(path: str | Path, max_pixels: int | None = None) -> Any:
    """The pydicom dataset of an image file, checked: file meta present, pixel data present, size
    within ``max_pixels`` and at least 2 x 2. Raises :class:`DataError` naming the file and the fix."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from dissectkit.imaging.checks import check_size

    path = Path(path)
    if not path.is_file():
        raise DataError(f"DICOM file {path} does not exist.")
    try:
        ds = pydicom.dcmread(str(path))
    except InvalidDicomError:
        raise DataError(
            f"{path} has no DICOM file meta header (no 'DICM' marker at byte 128): it is a bare data set, "
            "not a DICOM file. Rewrite it with a header (pydicom: ds = dcmread(path, force=True); set "
            "ds.file_meta.TransferSyntaxUID; ds.save_as(new_path, enforce_file_format=True); or dcmtk `dcmconv +F`)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error for this file
        detail = " ".join(str(exc).split())[:300]
        raise DataError(f"Cannot read DICOM file {path} (truncated or damaged?): {detail}. Re-copy the file.") from None
    if not any(k in ds for k in PIXEL_KEYWORDS):
        kind = f"modality {ds.get('Modality')}: " if ds.get("Modality") else ""
        raise DataError(
            f"DICOM file {path} has no pixel data ({kind}it may be a report, structured document or plan). "
            "Remove it from the probe set."
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"DICOM file {path} lacks a valid image size (Rows / Columns): {exc}. The file is damaged.") from None
    check_size(path, cols, rows, max_pixels)
    return ds


def n_frames(ds: Any, path: Path | str = "") -> int:
    """NumberOfFrames (1 when absent); a malformed value is a DataError."""
    value = ds.get("NumberOfFrames", 1)
    try:
        n = int(value) if value not in (None, "") else 1
    except (TypeError, ValueError):
        raise DataError(f"DICOM file {path} has an invalid Number of Frames {value!r}; the header is damaged.") from None
    return max(n, 1)


def decode_frame(ds: Any, path: str | Path, frame: int = 0) -> np.ndarray:
    """Decode frame ``frame`` of a dataset (YBR converted to RGB by pydicom), native byte order."""
    from pydicom.pixels import pixel_array

    n = n_frames(ds, path)
    if n == 1:
        frame = 0  # `frame` picks among the frames of multi-frame files; a single frame is itself
    if not 0 <= frame < n:
        raise DataError(
            f"DICOM file {path} has {n} frame(s); frame {frame} is out of range (0..{n - 1}). Set the probe's `frame`."
        )
    try:
        arr = pixel_array(ds, index=frame if n > 1 else None)
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes a DataError for this file
        if isinstance(exc, (AttributeError, KeyError)) and "Transfer Syntax" not in str(exc):
            raise DataError(
                f"DICOM file {path} lacks an element its pixel data needs ({' '.join(str(exc).split())}). "
                "The file is damaged or not an image."
            ) from None
        raise _decode_error(Path(path), ds, exc) from None
    if arr.ndim == 4 or (arr.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 1):
        arr = arr[0]  # a decoder that returned every frame
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def read_stored(path: str | Path, frame: int = 0, max_pixels: int | None = None) -> tuple[np.ndarray, str]:
    """(the stored pixel array of one frame, its Photometric Interpretation): no LUT applied."""
    stored, photometric, _ = read_stored_rescale(path, frame, max_pixels)
    return stored, photometric


def read_stored_rescale(path: str | Path, frame: int = 0,
                        max_pixels: int | None = None) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    """:func:`read_stored` and the Rescale Slope / Intercept (``None`` when absent, or identity, or the
    image has a Modality LUT instead): Mammo-CLIP's conversion applies them (in float32, as its reader)."""
    path = Path(path)
    ds = open_dicom(path, max_pixels)
    arr = decode_frame(ds, path, frame)
    rescale = None
    if "ModalityLUTSequence" not in ds and ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        rescale = None if (slope, intercept) == (1.0, 0.0) else (slope, intercept)
    return arr, str(ds.get("PhotometricInterpretation", "")).upper(), rescale


def _stored_range(ds: Any) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _lut_depth(item: Any) -> int:
    return int(item.LUTDescriptor[2])


def _voi_kind(ds: Any) -> str | None:
    """Which VOI step pydicom's ``apply_voi_lut`` applies: ``"lut"``, ``"window"`` or None."""
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        return "lut"
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        return "window"
    return None


def _modality_range(ds: Any) -> tuple[float, float]:
    """The range of the modality LUT's output for every storable value."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** _lut_depth(ds.ModalityLUTSequence[0]) - 1)
    lo, hi = _stored_range(ds)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    return float(lo), float(hi)


def display_range(ds: Any, voi: str | None) -> tuple[float, float]:
    """(black, white) of a monochrome image after the modality LUT and the VOI step ``voi``."""
    if voi == "lut":
        return 0.0, float(2 ** _lut_depth(ds.VOILUTSequence[0]) - 1)
    if voi == "window":  # pydicom's apply_windowing output range
        if ds.get("ModalityLUTSequence"):
            lo, hi = 0.0, float(2 ** _lut_depth(ds.ModalityLUTSequence[0]) - 1)
        else:
            lo, hi = (float(v) for v in _stored_range(ds))
        if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            lo, hi = lo * slope + intercept, hi * slope + intercept
        return lo, hi
    return _modality_range(ds)


def to_display(arr: np.ndarray, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    """Values with display range ``lo..hi`` -> ``uint8`` / ``uint16`` of the contract (module doc)."""
    span = hi - lo
    if span <= 0:
        return np.zeros(arr.shape, np.uint8)
    bits = int(round(np.log2(span + 1)))
    exact = np.issubdtype(arr.dtype, np.integer) and float(lo).is_integer() and 2**bits == span + 1
    if exact and 8 <= bits <= 16:
        x = arr.astype(np.int32 if arr.dtype.itemsize <= 2 else np.int64)  # room for the offset and the shift
        if lo:
            x -= int(lo)
        if x.min() < 0 or x.max() > span:
            np.clip(x, 0, int(span), out=x)
        if invert:
            np.subtract(int(span), x, out=x)
        if bits == 8:
            return x.astype(np.uint8)
        x <<= 16 - bits
        return x.astype(np.uint16)
    top = 255.0 if span <= 255 and np.issubdtype(arr.dtype, np.integer) else 65535.0
    x = arr.astype(np.float64)  # a copy: the steps below work in place
    x -= lo
    x *= top / span
    np.clip(x, 0.0, top, out=x)
    if invert:
        np.subtract(top, x, out=x)
    np.rint(x, out=x)
    return x.astype(np.uint8 if top == 255.0 else np.uint16)


def read_dicom(path: str | Path, frame: int = 0, apply_voi: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """One DICOM frame under the raw-image contract: ``HxW`` or ``HxWx3``, ``uint8`` / ``uint16`` on the
    display range of its real bit depth (docs/data.md, "DICOM"); every failure is a :class:`DataError`."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    from dissectkit.imaging.checks import note_source

    path = Path(path)
    note_source(str(path))
    ds = open_dicom(path, max_pixels)
    raw = decode_frame(ds, path, frame)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    try:
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(raw, ds)
            return to_display(rgb, 0, float(np.iinfo(rgb.dtype).max))
        if raw.ndim == 3:  # RGB (pydicom converted YBR)
            if np.issubdtype(raw.dtype, np.floating):
                return to_display(raw, float(raw.min()), float(raw.max()))
            return to_display(raw, *(float(v) for v in _stored_range(ds)))
        if np.issubdtype(raw.dtype, np.floating):  # float pixel data: no stored range
            lo, hi = float(raw.min()), float(raw.max())
            return to_display(raw, lo, hi, invert=photometric == "MONOCHROME1")
        arr = apply_modality_lut(raw, ds)
        if arr.dtype.kind == "f" and "ModalityLUTSequence" not in ds and _integral_rescale(ds):
            arr = np.rint(arr).astype(np.int64)
        voi = _voi_kind(ds) if apply_voi else None
        if voi == "window" and str(ds.get("VOILUTFunction", "LINEAR")).upper() in ("LINEAR", "LINEAR_EXACT"):
            return _linear_window(arr, ds, invert=photometric == "MONOCHROME1")
        if voi is not None:
            arr = apply_voi_lut(arr, ds, index=0)
        lo, hi = display_range(ds, voi)
        return to_display(np.asarray(arr), lo, hi, invert=photometric == "MONOCHROME1")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed LUT / window elements
        detail = " ".join(str(exc).split())[:300]
        raise DataError(f"Cannot apply the LUTs of DICOM file {path}: {detail}. Its header is damaged; "
                        "`apply_voi: false` skips a broken window / VOI LUT.") from None


def _first(value: Any) -> float:
    """The first of a multi-valued element (pydicom's index 0), else the value."""
    return float(value) if isinstance(value, (int, float, str)) else float(value[0])


def _linear_window(arr: np.ndarray, ds: Any, invert: bool) -> np.ndarray:
    """A LINEAR / LINEAR_EXACT window straight onto ``uint16`` (one fused pass; the same values as
    pydicom's ``apply_windowing`` mapped by :func:`to_display`, up to float rounding):
    ``clip((x - c) / w + 0.5, 0, 1)`` with ``c - 0.5``, ``w - 1`` for LINEAR (DICOM PS3.3 C.11.2.1.2)."""
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    if str(ds.get("VOILUTFunction", "LINEAR")).upper() == "LINEAR":
        if width < 1:
            raise ValueError(f"Window Width {width} is below 1 for a LINEAR window")
        center, width = center - 0.5, width - 1
    elif width <= 0:
        raise ValueError(f"Window Width {width} is not positive for a LINEAR_EXACT window")
    if width == 0:  # LINEAR with width 1: a threshold at the centre
        x = (np.asarray(arr) > center).astype(np.float64) * 65535.0
    else:
        x = np.asarray(arr).astype(np.float64)
        x -= center - width / 2
        x *= 65535.0 / width
        np.clip(x, 0.0, 65535.0, out=x)
    if invert:
        np.subtract(65535.0, x, out=x)
    np.rint(x, out=x)
    return x.astype(np.uint16)


def _integral_rescale(ds: Any) -> bool:
    try:
        return float(ds.RescaleSlope).is_integer() and float(ds.RescaleIntercept).is_integer()
    except (AttributeError, TypeError, ValueError):
        return False
