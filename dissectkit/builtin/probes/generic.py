"""Generic probes: an image folder (optional class sub-folders) and a CSV manifest."""

from __future__ import annotations

import os
from pathlib import Path

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DataError
from dissectkit.base.types import MasksWhen
from dissectkit.imaging.files import IMAGE_SUFFIXES, FileProbe, FileProbeParams, Record, read_csv


class ImageFolderParams(FileProbeParams):
    """``root``: images, optionally in class sub-folders (label ``class``). ``masks_root``: per-concept
    masks at ``<masks_root>/<concept>/<relative path without suffix>.png``."""

    masks_root: str | None = None


class CsvParams(FileProbeParams):
    """``root``: the CSV file, or a folder holding it (``file``). Paths are relative to the CSV's folder
    (or ``images_root``). ``mask_columns``: columns holding mask files (concept = column name, or a
    mapping concept -> column)."""

    file: str | None = None
    path_column: str = "path"
    label_columns: list[str] | None = None
    mask_columns: list[str] | dict[str, str] | None = None
    images_root: str | None = None
    id_column: str | None = None


def _root(params: FileProbeParams) -> Path:
    root = Path(params.root).expanduser()
    if not root.exists():
        raise DataError(f"Probe root {root} does not exist. Check `root` in the probe params.")
    return root


class ImageFolderProbe(FileProbe):
    name = "image-folder"
    has_masks = MasksWhen("masks_root", lambda p: p.masks_root is not None)

    def __init__(self, params: ImageFolderParams, ctx: BuildContext) -> None:
        root = _root(params)
        masks_root = Path(params.masks_root).expanduser() if params.masks_root else None
        if masks_root is None and (root / "images").is_dir() and (root / "masks").is_dir():
            raise DataError(
                f"Probe root {root} holds images/ and masks/ (the layout `dissectkit synth export` writes): as it is, "
                f"the masks would be read as probe images. Set root: {root / 'images'} and masks_root: "
                f"{root / 'masks'}" + (f" (as {root / 'probe.yaml'} does)." if (root / "probe.yaml").is_file() else ".")
            )
        skip = Path(os.path.abspath(masks_root)) if masks_root is not None else None
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and (skip is None or skip not in Path(os.path.abspath(p)).parents))
        with_class = any(p.parent != root for p in files)
        concepts = sorted(d.name for d in masks_root.iterdir() if d.is_dir()) if masks_root else []
        records = []
        for p in files:
            rel = p.relative_to(root)
            labels = {"class": rel.parts[0]} if with_class and len(rel.parts) > 1 else {}
            masks = {}
            for c in concepts:
                mp = (masks_root / c / rel).with_suffix(".png")
                if mp.is_file():
                    masks[c] = [mp]
            records.append(Record(p, rel.as_posix(), labels, masks))
        super().__init__(records, params, ctx, root)


class CsvProbe(FileProbe):
    name = "csv"
    has_masks = MasksWhen("mask_columns", lambda p: bool(p.mask_columns))

    def __init__(self, params: CsvParams, ctx: BuildContext) -> None:
        root = _root(params)
        csv_path = root / params.file if root.is_dir() and params.file else root
        if csv_path.is_dir():
            found = sorted(csv_path.glob("*.csv"))
            if len(found) != 1:
                raise DataError(f"{csv_path} holds {len(found)} CSV files; name one with `file`.")
            csv_path = found[0]
        base = Path(params.images_root).expanduser() if params.images_root else csv_path.parent
        mask_cols = params.mask_columns or []
        mask_map = dict(mask_cols) if isinstance(mask_cols, dict) else {c: c for c in mask_cols}
        required = [params.path_column, *(params.label_columns or []), *mask_map.values()]
        if params.id_column:
            required.append(params.id_column)
        df = read_csv(csv_path, required)
        label_cols = params.label_columns
        if label_cols is None:
            used = {params.path_column, params.id_column, *mask_map.values()}
            label_cols = [c for c in df.columns if c not in used]
        records = []
        for row in df.records():
            rel = row[params.path_column]
            path = Path(rel) if Path(rel).is_absolute() else base / rel
            masks = {}
            for concept, col in mask_map.items():
                if row[col]:
                    mp = Path(row[col])
                    masks[concept] = [mp if mp.is_absolute() else base / mp]
            labels = {c: _value(row[c]) for c in label_cols}
            rid = row[params.id_column] if params.id_column else rel
            records.append(Record(path, rid, labels, masks))
        super().__init__(records, params, ctx, csv_path)


def _value(text: str):
    """CSV cells as int / float when they parse, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
