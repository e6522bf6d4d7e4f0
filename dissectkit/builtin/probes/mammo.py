"""Mammography probes: VinDr-Mammo (DICOM and Mammo-CLIP PNG layouts) and RSNA Screening Mammography."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DataError
from dissectkit.base.types import MasksWhen
from dissectkit.imaging.files import FileProbe, FileProbeParams, Record, read_csv

VINDR_FINDINGS = (
    "Mass",
    "Suspicious Calcification",
    "Focal Asymmetry",
    "Architectural Distortion",
    "Asymmetry",
    "Suspicious Lymph Node",
    "Skin Thickening",
    "Global Asymmetry",
    "Nipple Retraction",
    "Skin Retraction",
)
BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
MAMMO_CLIP_CSV = "vindr_detection_v1_folds.csv"


class VindrParams(FileProbeParams):
    """``layout``: ``dicom`` (PhysioNet release), ``png`` (Mammo-CLIP's CSV + PNGs) or ``auto``.
    ``split``: ``training`` / ``test`` (``train`` accepted) or ``all``. ``images_root``: where the PNG
    folders are (default: ``root``, or ``root/images_png`` when that exists)."""

    split: str = "all"
    layout: Literal["auto", "dicom", "png"] = "auto"
    images_root: str | None = None
    box_masks: bool = False


class RsnaParams(FileProbeParams):
    """``split``: ``train`` (train.csv + train_images/) or ``test`` (test.csv + test_images/)."""

    split: Literal["train", "test"] = "train"


def _split_name(split: str) -> str | None:
    s = split.lower()
    if s in ("all", "*", ""):
        return None
    return {"train": "training", "training": "training", "test": "test"}.get(s) or _bad_split(split)


def _bad_split(split: str) -> str:
    raise DataError(f"Unknown VinDr-Mammo split {split!r}; use 'training', 'test' or 'all'.")


def _density_letter(value: str) -> str:
    """'DENSITY C' / 'C' / '3' -> 'C'."""
    v = str(value).strip().upper().replace("DENSITY", "").strip()
    return {"1": "A", "2": "B", "3": "C", "4": "D"}.get(v, v)


def _birads_number(value: str) -> int | str:
    v = str(value).strip().upper().replace("BI-RADS", "").strip()
    try:
        return int(float(v))
    except ValueError:
        return value


def _categories(text: str) -> list[str]:
    """"['Mass', 'Suspicious Calcification']" -> list (a plain single name also accepted)."""
    text = str(text).strip()
    if text.startswith("["):
        try:
            return [str(v) for v in ast.literal_eval(text)]
        except (ValueError, SyntaxError):
            raise DataError(f"Cannot parse finding_categories value {text!r}.") from None
    return [text] if text else []


class VindrMammoProbe(FileProbe):
    name = "vindr-mammo"
    has_masks = MasksWhen("box_masks: true", lambda p: p.box_masks)

    def __init__(self, params: VindrParams, ctx: BuildContext) -> None:
        root = Path(params.root).expanduser()
        layout = params.layout
        if layout == "auto":
            layout = "png" if (root / MAMMO_CLIP_CSV).is_file() and not (root / BREAST_CSV).is_file() else "dicom"
            if not (root / MAMMO_CLIP_CSV).is_file() and not (root / BREAST_CSV).is_file():
                raise DataError(
                    f"VinDr-Mammo root {root} holds neither {BREAST_CSV} (PhysioNet layout) nor "
                    f"{MAMMO_CLIP_CSV} (Mammo-CLIP PNG layout)."
                )
        split = _split_name(params.split)
        if params.box_masks and layout != "dicom":
            raise DataError("vindr-mammo: box_masks needs the PhysioNet DICOM layout (original pixel coordinates).")
        records = self._dicom(root, split, params.box_masks) if layout == "dicom" else self._png(root, split, params)
        super().__init__(records, params, ctx, root)

    @staticmethod
    def _dicom(root: Path, split: str | None, box_masks: bool = False) -> list[Record]:
        cols = ["study_id", "image_id", "laterality", "view_position", "breast_birads", "breast_density", "split"]
        breast = read_csv(root / BREAST_CSV, cols)
        findings: dict[str, list[str]] = {}
        boxes: dict[str, dict[str, list]] = {}
        if (root / FINDING_CSV).is_file() or box_masks:
            cols = ["image_id", "finding_categories"] + (["xmin", "ymin", "xmax", "ymax"] if box_masks else [])
            fdf = read_csv(root / FINDING_CSV, cols)
            for row in fdf.records():
                cats = [c for c in _categories(row["finding_categories"]) if c != "No Finding"]
                acc = findings.setdefault(row["image_id"], [])
                acc.extend(c for c in cats if c not in acc)
                if box_masks and cats and row["xmin"] != "":
                    box = tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                    for c in cats:
                        boxes.setdefault(row["image_id"], {}).setdefault(c.lower(), []).append(box)
        records = []
        for row in breast.records():
            if split is not None and row["split"] != split:
                continue
            found = findings.get(row["image_id"], [])
            labels = {
                "findings": found,
                **{f: int(f in found) for f in VINDR_FINDINGS},
                "birads": _birads_number(row["breast_birads"]),
                "density": _density_letter(row["breast_density"]),
                "laterality": row["laterality"],
                "view": row["view_position"],
                "split": row["split"],
            }
            path = root / "images" / row["study_id"] / f"{row['image_id']}.dicom"
            rid = f"{row['study_id']}/{row['image_id']}"
            records.append(Record(path, rid, labels, boxes.get(row["image_id"], {})))
        return records

    @staticmethod
    def _png(root: Path, split: str | None, params: VindrParams) -> list[Record]:
        df = read_csv(root / MAMMO_CLIP_CSV, ["patient_id", "image_id", "split"])
        if params.images_root:
            images = Path(params.images_root).expanduser()
        else:
            images = root / "images_png" if (root / "images_png").is_dir() else root
        finding_cols = [c for c in df.columns if c.replace("_", " ") in VINDR_FINDINGS]
        by_image: dict[tuple[str, str], Record] = {}
        for row in df.records():
            if split is not None and row["split"] != split:
                continue
            image_id = row["image_id"]
            rec = by_image.get((row["patient_id"], image_id))
            if rec is None:
                labels = {"findings": [], **{f: 0 for f in VINDR_FINDINGS}, "split": row["split"]}
                if "density" in row:
                    labels["density"] = _density_letter(row["density"])
                if "breast_birads" in row:
                    labels["birads"] = _birads_number(row["breast_birads"])
                labels.update({key: row[key] for key in ("laterality", "view") if key in row})
                rid = f"{row['patient_id']}/{image_id.rsplit('.', 1)[0]}"  # = study_id/image_id, as in the DICOM layout
                rec = by_image[(row["patient_id"], image_id)] = Record(images / row["patient_id"] / image_id, rid, labels)
            for col in finding_cols:
                if _truthy(row[col]):
                    name = col.replace("_", " ")
                    rec.labels[name] = 1
                    if name not in rec.labels["findings"]:
                        rec.labels["findings"].append(name)
        for rec in by_image.values():
            rec.labels["findings"] = [f for f in VINDR_FINDINGS if f in rec.labels["findings"]]
        return list(by_image.values())


def _truthy(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return str(value).strip().lower() in ("true", "yes")


class RsnaMammoProbe(FileProbe):
    name = "rsna-mammo"

    def __init__(self, params: RsnaParams, ctx: BuildContext) -> None:
        root = Path(params.root).expanduser()
        required = ["patient_id", "image_id", "laterality"]
        df = read_csv(root / f"{params.split}.csv", required)
        label_cols = [
            c
            for c in ("site_id", "laterality", "view", "age", "cancer", "biopsy", "invasive", "BIRADS", "implant",
                      "density", "machine_id", "difficult_negative_case")
            if c in df.columns
        ]
        records = []
        for row in df.records():
            labels = {c: _num(row[c]) for c in label_cols}
            path = root / f"{params.split}_images" / row["patient_id"] / f"{row['image_id']}.dcm"
            records.append(Record(path, f"{row['patient_id']}/{row['image_id']}", labels))
        super().__init__(records, params, ctx, root)


def _num(text: str):
    try:
        f = float(text)
    except ValueError:
        return text
    return int(f) if f.is_integer() else f
