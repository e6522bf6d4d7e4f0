"""CBIS-DDSM: full mammograms with ROI masks exposed per BI-RADS concept (docs/data.md, "Probes":
the concept keys, ``CBIS_TERMS`` the few renamings, and the NBIA download tree)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DataError
from dissectkit.imaging.files import FileProbe, FileProbeParams, Record, check_columns, read_csv

CBIS_TERMS = {
    "ILL_DEFINED": "ill-defined",
    "LUCENT_CENTER": "lucent-centered",
    "LUCENT_CENTERED": "lucent-centered",
    "LARGE_RODLIKE": "large rod-like",
    "ROUND_AND_REGULAR": "round and regular",
    "DIFFUSELY_SCATTERED": "diffuse",
    "ASYMMETRIC_BREAST_TISSUE": "asymmetry",
    "FOCAL_ASYMMETRIC_DENSITY": "focal asymmetry",
    "LYMPH_NODE": "intramammary lymph node",
    "MILK_OF_CALCIUM": "milk of calcium",
}
DESCRIPTORS = {
    "mass": (("mass shape", "mass_shape"), ("mass margins", "mass_margins")),
    "calc": (("calc type", "calc_type"), ("calc distribution", "calc_distribution")),
}


def cbis_concepts(value: str) -> list[str]:
    """One CBIS descriptor cell -> concept texts ("SPICULATED-ILL_DEFINED" -> spiculated, ill-defined)."""
    value = str(value).strip()
    if not value or value.upper() in ("N/A", "NAN", "NONE"):
        return []
    out = []
    for part in value.split("-"):
        part = part.strip().upper()
        if part:
            out.append(CBIS_TERMS.get(part, part.lower().replace("_", " ")))
    return out


class CbisParams(FileProbeParams):
    """``split``: ``train`` / ``test``; ``abnormality``: ``mass``, ``calc`` or ``both``."""

    split: Literal["train", "test"] = "train"
    abnormality: Literal["mass", "calc", "both"] = "both"


class CbisDdsmProbe(FileProbe):
    name = "cbis-ddsm"
    has_masks = True

    def __init__(self, params: CbisParams, ctx: BuildContext) -> None:
        root = Path(params.root).expanduser()
        if not root.is_dir():
            raise DataError(f"CBIS-DDSM root {root} does not exist.")
        self._dirs: dict[str, list[Path]] | None = None
        kinds = ("mass", "calc") if params.abnormality == "both" else (params.abnormality,)
        by_image: dict[str, Record] = {}
        for kind in kinds:
            csv = root / f"{kind}_case_description_{params.split}_set.csv"
            df = read_csv(csv)
            density = "breast_density" if "breast_density" in df.columns else "breast density"
            required = ["patient_id", density, "left or right breast", "image view", "abnormality id",
                        "abnormality type", "assessment", "pathology", "subtlety", "image file path",
                        "ROI mask file path", *(c for c, _ in DESCRIPTORS[kind])]
            check_columns(list(df.columns), required, csv)
            for row in df.records():
                image_rel = row["image file path"].strip()
                rec = by_image.get(image_rel)
                if rec is None:
                    rec = by_image[image_rel] = Record(
                        self._locate(root, image_rel, "full"),
                        f"{row['patient_id']}/{row['left or right breast']}_{row['image view']}",
                        {"abnormality": [], "pathology": [], "assessment": 0, "mass_shape": [], "mass_margins": [],
                         "calc_type": [], "calc_distribution": [], "concepts": [],
                         "density": _int(row[density]), "laterality": row["left or right breast"],
                         "view": row["image view"]},
                    )
                lab = rec.labels
                abn = "mass" if kind == "mass" else "calcification"
                concepts = [abn]
                for col, key in DESCRIPTORS[kind]:
                    terms = cbis_concepts(row[col])
                    _extend(lab[key], terms)
                    concepts += terms
                _extend(lab["abnormality"], [abn])
                _extend(lab["pathology"], [row["pathology"].strip().lower()])
                lab["assessment"] = max(lab["assessment"], _int(row["assessment"]) or 0)
                _extend(lab["concepts"], concepts)
                mask_path = self._locate(root, row["ROI mask file path"].strip(), "roi")
                for c in concepts:
                    rec.masks.setdefault(c, []).append(mask_path)
        super().__init__(list(by_image.values()), params, ctx, root)

    def _locate(self, root: Path, rel: str, role: str) -> Path:
        """The CSV path under root, else the file in the NBIA download tree (docs/data.md, "Probes")."""
        rel = rel.replace("\\", "/")
        for base in (root, root / "CBIS-DDSM"):
            if (base / rel).is_file():
                return base / rel
        subject = rel.split("/", 1)[0]
        if self._dirs is None:
            self._dirs = _subject_dirs(root)
        files = self._dirs.get(subject, [])
        if role == "roi":
            named = [f for f in files if "roi" in f.parent.name.lower() or "mask" in f.parent.name.lower()]
            files = named or files
        if not files:
            return root / rel
        return max(files, key=lambda f: (f.stat().st_size, str(f)))


def _subject_dirs(root: Path) -> dict[str, list[Path]]:
    """Subject folder name -> its DICOM files, for the NBIA layout (empty when the CSV paths resolve)."""
    out: dict[str, list[Path]] = {}
    for base in (root, root / "CBIS-DDSM"):
        if not base.is_dir():
            continue
        for d in base.iterdir():
            if d.is_dir() and ("_P_" in d.name):
                out.setdefault(d.name, []).extend(sorted(d.rglob("*.dcm")))
    return out


def _extend(acc: list, values: list) -> None:
    acc.extend(v for v in values if v not in acc)


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None
