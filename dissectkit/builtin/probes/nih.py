"""NIH ChestX-ray14: findings as labels, bounding boxes (BBox_List_2017.csv) as box masks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DataError
from dissectkit.imaging.files import FileProbe, FileProbeParams, Record, check_columns, read_csv

# The 14 findings in the dataset's label order (also the densenet121-cxr output order).
NIH_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
# BBox_List_2017.csv spells one finding differently from Data_Entry_2017.csv.
_BBOX_ALIASES = {"Infiltrate": "Infiltration"}


def finding_text(name: str) -> str:
    """The concept text of an NIH finding name: ``Pleural_Thickening`` -> ``pleural thickening``."""
    return name.replace("_", " ").lower()


class NihParams(FileProbeParams):
    """``split``: ``train_val`` / ``test`` (the official lists) or ``all``; ``with_boxes_only``: keep the
    images that have bounding boxes (984 in the release)."""

    split: Literal["train_val", "test", "all"] = "all"
    with_boxes_only: bool = False


class NihCxr14Probe(FileProbe):
    name = "nih-cxr14"
    has_masks = True

    def __init__(self, params: NihParams, ctx: BuildContext) -> None:
        root = Path(params.root).expanduser()
        entry = read_csv(root / "Data_Entry_2017.csv", ["Image Index", "Finding Labels"])
        boxes = _read_boxes(root / "BBox_List_2017.csv")
        keep = None
        if params.split != "all":
            list_file = root / f"{params.split}_list.txt"
            if not list_file.is_file():
                raise DataError(f"Split list {list_file} not found (NIH ChestX-ray14 ships train_val_list.txt and test_list.txt).")
            keep = {ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()}
        where = _image_index(root)
        extra = [c for c in ("Patient ID", "Patient Age", "Patient Gender", "View Position", "Follow-up #") if c in entry.columns]
        records = []
        for row in entry.records():
            name = row["Image Index"]
            if (keep is not None and name not in keep) or (params.with_boxes_only and name not in boxes):
                continue
            found = [f for f in row["Finding Labels"].split("|") if f and f != "No Finding"]
            labels = {"findings": found, **{f: int(f in found) for f in NIH_FINDINGS}}
            labels.update({c.lower().replace(" ", "_").replace("-", "").replace("#", "number").strip("_"): row[c] for c in extra})
            masks = {}
            for finding, box in boxes.get(name, []):
                masks.setdefault(finding_text(finding), []).append(box)
            records.append(Record(where.get(name, root / "images" / name), name, labels, masks))
        super().__init__(records, params, ctx, root)


def _read_boxes(path: Path) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """Image -> [(finding, (x0, y0, x1, y1))]. The release's header is ``Bbox [x,y,w,h]`` split over
    four columns (``Bbox [x``, ``y``, ``w``, ``h]``), so the four numbers are read by position."""
    if not path.is_file():
        return {}
    df = read_csv(path, ["Image Index", "Finding Label"])
    cols = list(df.columns)
    start = cols.index("Finding Label") + 1
    if len(cols) < start + 4:
        check_columns(cols, ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"], path)
    out: dict[str, list] = {}
    for row in df.rows:
        vals = list(row)
        try:
            x, y, w, h = (float(v) for v in vals[start : start + 4])
        except ValueError:
            raise DataError(f"{path}: bad box values {vals[start:start + 4]} for {vals[cols.index('Image Index')]}.") from None
        finding = str(vals[cols.index("Finding Label")]).strip()
        finding = _BBOX_ALIASES.get(finding, finding)
        out.setdefault(str(vals[cols.index("Image Index")]), []).append((finding, (x, y, x + w, y + h)))
    return out


def _image_index(root: Path) -> dict[str, Path]:
    """File name -> path for every PNG under ``images*/`` (``images/`` or the ``images_001/images`` parts)."""
    out: dict[str, Path] = {}
    for d in sorted(root.glob("images*")):
        if d.is_dir():
            for p in d.rglob("*.png"):
                out.setdefault(p.name, p)
    return out
