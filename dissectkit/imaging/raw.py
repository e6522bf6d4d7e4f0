"""The raw-image contract: what probes hand to models (the display range of each image type,
docs/data.md, "Raw images"), the one conversion every model starts from, and image files read into it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dissectkit.base.errors import DataError
from dissectkit.imaging.checks import MIN_SIDE, check_size, note_source, warn_if_flat
from dissectkit.imaging.checks import reset_warnings as reset_warnings

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

SUPPORTED = "a PIL image or a numpy array HxW / HxWxC (C = 1, 3 or 4) of uint8, uint16, bool or float"
DICOM_SUFFIXES = (".dcm", ".dicom")


def _pil_array(image: Any) -> np.ndarray:
    """A PIL image as an array under the contract (16-bit kept, palette / alpha / CMYK converted)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16)
        return arr.astype(np.float32)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode in ("1", "LA", "La"):
        image = image.convert("L")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return np.asarray(image)


def as_array(image: Any) -> np.ndarray:
    """The image as a numpy array ``HxW`` or ``HxWx3`` (dtype uint8, uint16 or float32)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        arr = _pil_array(image)
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise DataError(f"Unsupported image of type {type(image).__name__}; expected {SUPPORTED}.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DataError(f"Unsupported image array of shape {arr.shape}; expected {SUPPORTED}.")
    if min(arr.shape[:2]) < MIN_SIDE:
        raise DataError(
            f"The image is {arr.shape[1]} x {arr.shape[0]} pixels: too small to show a model (each side needs "
            f"at least {MIN_SIDE} pixels). Remove it from the probe set."
        )
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # alpha dropped
    if arr.dtype == np.uint8 or arr.dtype == np.uint16:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError("Image array contains NaN or inf values.")
        return arr.astype(np.float32, copy=False)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 65535:
            raise DataError(f"Image array of dtype {arr.dtype} has values outside 0..65535; expected {SUPPORTED}.")
        return arr.astype(np.uint16)
    raise DataError(f"Unsupported image dtype {arr.dtype}; expected {SUPPORTED}.")


def to_unit_float(image: Any, model: str | None = None) -> np.ndarray:
    """Float32 in [0, 1] by the display range: uint8 / 255, uint16 / 65535; floats min-max scaled
    only if outside [0, 1]. ``model`` names the receiving model for the almost-constant warning."""
    arr = as_array(image)
    if arr.dtype == np.uint8:
        unit = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        unit = arr.astype(np.float32) / 65535.0
    else:
        lo, hi = float(arr.min()), float(arr.max())
        unit = arr if lo >= 0.0 and hi <= 1.0 else ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr))
    if model is not None:
        warn_if_flat(unit, model)
    return unit


def minmax_unit(image: Any, model: str | None = None) -> np.ndarray:
    """Float32 scaled to [0, 1] by the image's own min and max (Mammo-CLIP style)."""
    arr = as_array(image).astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    unit = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if model is not None:
        warn_if_flat(unit, model)
    return unit


def to_uint8(image: Any, model: str | None = None) -> np.ndarray:
    """The 8-bit array of the display range (uint8 kept; others ``round(unit * 255)``)."""
    arr = as_array(image)
    if arr.dtype == np.uint8:
        if model is not None:
            warn_if_flat(arr.astype(np.float32) / 255.0, model)
        return arr
    return np.round(to_unit_float(arr, model) * 255.0).astype(np.uint8)


def to_pil(image: Any, mode: str = "RGB", model: str | None = None) -> PILImage:
    """A PIL image in ``mode`` (``"RGB"`` or ``"L"``) of the display range (16-bit / float -> 8 bits).
    RGB -> L uses PIL's ITU-R 601 luma; L -> RGB repeats the grey."""
    from PIL import Image

    if isinstance(image, Image.Image) and image.mode in ("L", "RGB") and model is None:
        return image.convert(mode) if image.mode != mode else image
    pil = Image.fromarray(to_uint8(image, model))
    return pil.convert(mode) if pil.mode != mode else pil


def centre_indices(n: int, g: int) -> np.ndarray:
    """Nearest-neighbour resampling of ``n`` pixels to ``g``: the source pixel under each target
    pixel's centre (index ``floor((i + 0.5) * n / g)``)."""
    return np.minimum(((np.arange(g) + 0.5) * n / g).astype(np.int64), n - 1)


def gray_or_rgb(arr: np.ndarray, channels: int = 3) -> np.ndarray:
    """``HxW`` or ``HxWx3`` -> ``HxWx channels`` (grayscale repeated, or RGB averaged to one channel)."""
    if channels == 3:
        return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr
    return arr if arr.ndim == 2 else arr.mean(axis=2).astype(arr.dtype)


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` / ``.dicom`` suffix, or the ``DICM`` marker at byte 128 (files without suffix)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_image(path: str | Path, frame: int = 0, apply_voi: bool = True, max_pixels: int | None = None) -> Any:
    """One image file under the raw-image contract.

    DICOM -> :func:`dissectkit.imaging.dicom.read_dicom` (uint8 / uint16 array, LUTs applied; ``apply_voi``
    false skips the VOI LUT / window). Other files through Pillow: 16-bit greyscale -> ``uint16``,
    32-bit float -> float32, 8-bit L / RGB -> a PIL image, palette / RGBA / CMYK -> RGB. Multi-frame
    files (TIFF, GIF, DICOM) give frame ``frame`` (default the first; single-frame files their only one). Unreadable, truncated, 1 x 1,
    or over ``max_pixels`` (default ``MAX_PIXELS``) -> :class:`DataError` naming the file and the fix.
    """
    path = Path(path)
    note_source(str(path))
    if is_dicom(path):
        from dissectkit.imaging.dicom import read_dicom

        return read_dicom(path, frame=frame, apply_voi=apply_voi, max_pixels=max_pixels)
    import warnings

    from PIL import Image

    if not path.is_file():
        raise DataError(f"Image file {path} does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path} is refused as a decompression bomb by Pillow ({exc}). If the image is genuine, "
            "downscale the file."
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"Cannot read image {path}: {exc}. Is it an image file (PNG, JPEG, TIFF, DICOM ...)?") from None
    with im:
        check_size(path, im.width, im.height, max_pixels)
        n = int(getattr(im, "n_frames", 1))
        frame = 0 if n == 1 else frame  # `frame` picks among the frames of multi-frame files
        if not 0 <= frame < n:
            raise DataError(
                f"{path} has {n} frame(s); frame {frame} is out of range (0..{n - 1}). Set the probe's `frame`."
            )
        try:
            if frame:
                im.seek(frame)
            im.load()
            if im.mode in ("L", "RGB"):
                return im.copy()
            return as_array(im)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise DataError(
                f"Cannot decode image {path} (truncated or damaged?): {exc}. Re-copy the file from its source."
            ) from None


def display_image(image: Any, keep_grey: bool = False) -> PILImage:
    """A PIL image for display: RGB, or ``L`` for a single-channel image when ``keep_grey`` (a third
    of the work for thumbnails); 16-bit and float data are min-max stretched (e.g. 12-bit DICOM)."""
    arr = as_array(image)
    if arr.dtype != np.uint8:
        arr = np.round(minmax_unit(arr) * 255.0).astype(np.uint8)
    grey = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1)
    return to_pil(arr.reshape(arr.shape[:2]) if grey else arr, "L" if grey and keep_grey else "RGB")
