"""Checks every image reader and model input shares: the pixel limits of a file, and the
once-per-run warning about an almost constant model input (naming the file it came from)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.errors import DataError

MIN_SIDE = 2  # a 1-pixel-wide image has no spatial content to show a model
MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS (a 9459 x 9459 image)
ALMOST_CONSTANT = 1 / 16  # a model input spanning less of [0, 1] than this is reported (12 bits in 16 do)

log = logging.getLogger("dissectkit.imaging.raw")


def check_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an image over ``max_pixels`` (default :data:`MAX_PIXELS`) or under :data:`MIN_SIDE` per side."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if width * height > limit:
        raise DataError(
            f"{path} is {width} x {height} = {width * height:,} pixels, over the pixel limit of {limit:,} "
            "(a decompression bomb or a damaged header). If the image is genuine, raise the reader's "
            "`max_pixels`, or downscale the file."
        )
    if min(width, height) < MIN_SIDE:
        raise DataError(
            f"{path} is {width} x {height} pixels: too small to show a model (each side needs at least "
            f"{MIN_SIDE} pixels). Remove it from the probe set."
        )


class _RunState:
    """Per-run state of the warning: whether it was given (shared with forked DataLoader workers
    through a multiprocessing value made at run start) and the file last read in this process."""

    flag: Any = None
    warned = False
    source: str | None = None


def reset_warnings() -> None:
    """Start a new run: the almost-constant warning may be given once more (called at run start)."""
    import multiprocessing

    _RunState.flag = multiprocessing.Value("b", 0)
    _RunState.warned = False
    _RunState.source = None


def note_source(name: str | None) -> None:
    """Record the file being read, so a warning about the image it gives can name it."""
    _RunState.source = name


def _first_warning() -> bool:
    flag = _RunState.flag
    if flag is None:
        first, _RunState.warned = not _RunState.warned, True
        return first
    with flag.get_lock():
        first, flag.value = flag.value == 0, 1
    return bool(first)


def warn_if_flat(unit: np.ndarray, model: str) -> None:
    """Log one warning per run when a model's [0, 1] input spans less than ``ALMOST_CONSTANT``."""
    span = float(unit.max() - unit.min()) if unit.size else 0.0
    if span >= ALMOST_CONSTANT or not _first_warning():
        return
    item = f"probe image {_RunState.source}" if _RunState.source else "a probe image"
    log.warning(
        "%s receives an almost constant image from %s: its values span %.4f of the display range [0, 1] "
        "(a blank image, or e.g. 12-bit data in a 16-bit file, which is read as 0..65535). Check the "
        "file; further such images are not reported in this run.",
        model, item, span,
    )
