"""The file-probe base: probes over image files on disk (records, selection, image and mask reading,
ids and a fingerprint of the files). Public as ``dissectkit.plugin.FileProbe``; every built-in dataset
probe is one."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dissectkit.base.context import BuildContext
from dissectkit.base.contract import Probe
from dissectkit.base.errors import DataError, did_you_mean
from dissectkit.base.params import Params
from dissectkit.base.types import MasksWhen, ProbeItem
from dissectkit.imaging.raw import as_array, read_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom"}


class FileProbeParams(Params):
    """Options every probe shares."""

    root: str
    max_images: int | None = None
    balance_by: str | None = None
    seed: int | None = None
    breast_crop: bool = False
    frame: int = 0
    """Frame of multi-frame files (DICOM, TIFF) to read; single-frame files give their only frame."""
    apply_voi: bool = True
    """Apply a DICOM's VOI LUT / window; false keeps the modality values (as Mammo-CLIP's conversion does)."""
    allow_outside_root: bool = False
    """Read files (and masks) listed outside the probe's root and the folders its params name
    (``images_root``, ``masks_root``, ...); by default such rows are refused and listed in ``probe.skipped``."""


@dataclass
class Record:
    """One probe image before reading: its file, id, labels and optional mask sources."""

    path: Path
    id: str
    labels: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, list[Any]] = field(default_factory=dict)  # concept -> [mask file | box (x0,y0,x1,y1)]
    report: str | None = None


def read_mask(path: Path) -> np.ndarray:
    """A mask file (any image format or DICOM) as a boolean ``HxW`` array (non-zero = inside)."""
    arr = np.asarray(read_image(path))
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return arr > 0


def fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to ``shape`` (H, W) with nearest-neighbour sampling when sizes differ."""
    if mask.shape == shape:
        return mask
    rows = np.minimum((np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1)
    out: np.ndarray = mask[rows[:, None], cols[None, :]]
    return out


def box_mask(shape: tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """A boolean mask of ``shape`` that is True inside ``box`` = (x0, y0, x1, y1) in pixels."""
    h, w = shape
    x0, y0, x1, y1 = (float(v) for v in box)
    mask = np.zeros((h, w), dtype=bool)
    r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))
    c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))
    if r1 > r0 and c1 > c0:
        mask[r0:r1, c0:c1] = True
    return mask


def check_columns(columns: Sequence[str], required: Sequence[str], file: Path) -> None:
    """DataError naming the missing column(s) and listing the columns found."""
    missing = [c for c in required if c not in columns]
    if missing:
        hints = "".join(did_you_mean(m, columns) for m in missing)
        raise DataError(
            f"{file} lacks the column(s) {', '.join(repr(m) for m in missing)}.{hints} "
            f"Columns found: {', '.join(repr(str(c)) for c in columns)}."
        )


@dataclass
class CsvTable:
    """A CSV read as strings: its column names and its rows (``rows[i][j]`` is column ``j``)."""

    columns: list[str]
    rows: list[list[str]]

    def records(self) -> list[dict[str, str]]:
        """One ``{column: cell}`` dict per row."""
        cols = self.columns
        return [dict(zip(cols, row, strict=True)) for row in self.rows]

    def column(self, name: str) -> list[str]:
        """The cells of column ``name``, top to bottom."""
        j = self.columns.index(name)
        return [row[j] for row in self.rows]


def _header(names: list[str]) -> list[str]:
    """Column names as pandas gives them: a blank one is ``Unnamed: j``, a repeat ``name.1``, ..."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        name = name.strip() or f"Unnamed: {j}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def read_csv(path: Path, required: Sequence[str] = ()) -> CsvTable:
    """A CSV (stdlib ``csv``; UTF-8 with or without BOM) as strings, checked for required columns.

    Blank lines are skipped; a short row is padded with empty cells; trailing empty cells beyond
    the header are dropped; any other extra cell is a :class:`DataError` naming the line."""
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}. Check `root` (and the file name) in the probe params.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read CSV {path}: {exc}") from None
    if not lines:
        raise DataError(f"CSV {path} is empty; it needs a header row naming its columns.")
    columns = _header(lines[0])
    n = len(columns)
    rows = []
    for line_no, row in enumerate(lines[1:], start=2):
        if len(row) > n:
            if any(cell.strip() for cell in row[n:]):
                raise DataError(
                    f"CSV {path}: data row {line_no} has {len(row)} cells but the header names {n} columns."
                )
            row = row[:n]
        elif len(row) < n:
            row = row + [""] * (n - len(row))
        rows.append(row)
    check_columns(columns, required, path)
    return CsvTable(columns, rows)


def _balance_key(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "|".join(sorted(str(v) for v in value))
    return str(value)


def select(records: list[Record], max_images: int | None, balance_by: str | None, seed: int) -> list[Record]:
    """Seeded subset, kept in file order. ``balance_by``: the same number of images per value of that
    label (round-robin over shuffled groups up to ``max_images``; without it, the smallest group's size)."""
    rng = np.random.default_rng(seed)
    if balance_by is not None:
        missing = [r.id for r in records if balance_by not in r.labels]
        if missing:
            found = sorted({k for r in records for k in r.labels})
            raise DataError(
                f"balance_by={balance_by!r} is not a label of this probe (image {missing[0]}). "
                f"Labels: {', '.join(found)}."
            )
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(_balance_key(r.labels[balance_by]), []).append(i)
        shuffled = [list(rng.permutation(idx)) for _, idx in sorted(groups.items())]
        budget = max_images if max_images is not None else min(len(g) for g in shuffled) * len(shuffled)
        chosen: list[int] = []
        depth = 0
        while len(chosen) < budget and any(depth < len(g) for g in shuffled):
            for g in shuffled:
                if depth < len(g) and len(chosen) < budget:
                    chosen.append(int(g[depth]))
            depth += 1
        return [records[i] for i in sorted(chosen)]
    if max_images is not None and max_images < len(records):
        idx = sorted(int(i) for i in rng.choice(len(records), size=max_images, replace=False))
        return [records[i] for i in idx]
    return records


def unique_ids(ids: Sequence[str]) -> list[str]:
    """``ids`` with each repeat made unique in order: the second ``x`` becomes ``x~2``, the third ``x~3``
    (skipping any suffix that is itself an id), so every id still names its file and stays stable."""
    taken = set(ids)
    count: dict[str, int] = {}
    out = []
    for i in ids:
        n = count.get(i, 0) + 1
        count[i] = n
        if n == 1:
            out.append(i)
            continue
        candidate = f"{i}~{n}"
        while candidate in taken:
            n += 1
            candidate = f"{i}~{n}"
        count[i] = n
        taken.add(candidate)
        out.append(candidate)
    return out


class FileProbe(Probe):
    """A list of :class:`Record` read lazily; missing files are skipped (or an error when strict).

    Each record's id is file-true (a path relative to the probe root, or the publisher's ids) and
    unique: repeats are suffixed by :func:`unique_ids` over the listing, before any selection."""

    name = "probe"
    has_masks: ClassVar[bool | MasksWhen] = False
    """Whether items carry masks (``MasksWhen``: for some params): the probe's one declaration, which
    its registration reads."""

    def __init__(self, records: list[Record], params: FileProbeParams, ctx: BuildContext, root: Path) -> None:
        self.root = root
        self.params = params
        declared = type(self).has_masks
        self.with_masks = declared(params) if isinstance(declared, MasksWhen) else bool(declared)
        self.skipped: list[tuple[str, str]] = []
        for r, rid in zip(records, unique_ids([r.id for r in records]), strict=True):
            r.id = rid
        present = []
        roots = self.allowed_roots()
        for r in records:
            reason = _refusal(r, roots, params.allow_outside_root)
            missing = reason is None and not r.path.is_file()
            if missing:
                reason = f"file not found: {_printable(r.path)}"
            if reason is None:
                present.append(r)
                continue
            r.id = _printable(r.id)
            if ctx.strict_data:
                what = f"image {_printable(r.path)} (id {r.id}) does not exist" if missing else f"image {r.id}: {reason}"
                raise DataError(f"{self.name}: {what} (strict data mode; turn runtime.strict_data off to skip such "
                                "images).")
            self.skipped.append((r.id, reason))
        if params.max_images is not None and params.max_images < 1:
            raise DataError(f"{self.name}: max_images must be at least 1 (got {params.max_images}).")
        seed = params.seed if params.seed is not None else ctx.seed
        self.records = select(present, params.max_images, params.balance_by, seed)
        self._ids: list[str] | None = None
        if not self.records:
            extra = f" ({len(self.skipped)} listed images are left out, e.g. {self.skipped[0][1]})" if self.skipped else ""
            check = " and `split`" if "split" in type(params).model_fields else ""
            raise DataError(f"{self.name} probe has no images under {_printable(root)}{extra}. Check `root`{check}.")

    def allowed_roots(self) -> list[Path]:
        """The folders the probe's files (and masks) must lie in: its root (the folder of a root
        file) and every folder its params name (``images_root``, ``masks_root``, a plugin's own
        ``masks`` folder: the user wrote them in the recipe)."""
        root = self.root if self.root.is_dir() or not self.root.suffix else self.root.parent
        named = [Path(v).expanduser() for v in vars(self.params).values() if isinstance(v, str | Path) and str(v)]
        return [Path(os.path.abspath(r)) for r in [root, *(p for p in named if p.is_dir())]]

    def __len__(self) -> int:
        return len(self.records)

    def ids(self) -> list[str]:
        """Every item's id in order (``ids()[i] == self[i].id``), without reading images. Built once;
        the list is shared, so callers must not modify it."""
        if self._ids is None:
            self._ids = [r.id for r in self.records]
        return self._ids

    def __getitem__(self, index: int) -> ProbeItem:
        r = self.records[index]
        image = read_image(r.path, self.params.frame, self.params.apply_voi)
        box = None
        shape = _shape(image)
        if self.params.breast_crop:
            from dissectkit.imaging.mammo_png import breast_box, minmax_uint8

            arr = as_array(image)
            box = breast_box(minmax_uint8(arr.mean(axis=2) if arr.ndim == 3 else arr))
            image = arr[box[0] : box[1], box[2] : box[3]]
        return ProbeItem(image, r.id, dict(r.labels), self._masks(r, shape, box), r.report)

    def _masks(self, r: Record, shape: tuple[int, int], box: tuple[int, int, int, int] | None) -> dict[str, np.ndarray] | None:
        """Per-concept boolean masks at the full image size, then cut like the image when cropped."""
        if not r.masks:
            return {} if self.with_masks else None
        out: dict[str, np.ndarray] = {}
        for concept, sources in r.masks.items():
            mask = np.zeros(shape, dtype=bool)
            for src in sources:
                if isinstance(src, Path):
                    if not src.is_file():
                        raise DataError(f"{self.name}: mask {src} of image {r.id} does not exist.")
                    mask |= fit_mask(read_mask(src), shape)
                else:
                    mask |= box_mask(shape, src)
            out[concept] = mask if box is None else mask[box[0] : box[1], box[2] : box[3]]
        return out

    def fingerprint(self) -> str:
        """sha256 over the probe kind, its params and (path, size, mtime) of every file in order
        (paths as the file system's bytes, so any file name hashes)."""
        h = hashlib.sha256()
        h.update(json.dumps({"probe": self.name, "params": self.params.model_dump()}, sort_keys=True, default=str).encode())
        for r in self.records:
            name = r.id.encode("utf-8", "surrogateescape") + b"\0" + os.fsencode(r.path)
            try:
                st = os.stat(r.path)
                h.update(name + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(name + b"\0missing\n")
            h.update(json.dumps(r.labels, sort_keys=True, default=str).encode())
            for concept in sorted(r.masks):
                h.update(f"{concept}:{r.masks[concept]!r}".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def _printable(value: Any) -> str:
    """A path or id as text that any terminal, CSV or JSON file takes (undecodable bytes as ``\\xNN``)."""
    text = str(value)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8(value: Any) -> bool:
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inside(path: Path, roots: list[Path]) -> bool:
    p = os.path.abspath(path)
    return any(p == str(r) or p.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots)


def _refusal(r: Record, roots: list[Path], outside_ok: bool) -> str | None:
    """Why a record cannot be read as listed: a file name that is not valid UTF-8 (ids, tables and
    reports could not hold it), or a file outside the probe's roots (unless allowed)."""
    if not _utf8(r.path) or not _utf8(r.id):
        return (f"file name '{_printable(r.path.name)}' in {_printable(r.path.parent)} is not valid UTF-8; "
                "rename it (e.g. with convmv) to read it")
    if outside_ok:
        return None
    for src in [r.path, *(m for srcs in r.masks.values() for m in srcs if isinstance(m, Path))]:
        if not _inside(src, roots):
            return (f"{_printable(src)} lies outside the probe's root ({', '.join(map(str, roots))}); set "
                    "`allow_outside_root: true` in the probe params to read it")
    return None


def _shape(image: Any) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.height), int(image.width)
