"""The replica world: the synthetic mammograms written in each publisher's file layout, with
``synth_truth.csv`` and ``probe.yaml`` next to the data (docs/synthetic.md, "The replica world")."""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.errors import DataError, did_you_mean
from dissectkit.builtin.probes.mammo import VINDR_FINDINGS
from dissectkit.builtin.probes.nih import NIH_FINDINGS
from dissectkit.imaging.files import read_csv, unique_ids
from dissectkit.synthetic import vocab
from dissectkit.synthetic.generator import Sample, SynthMammoGenerator, finding_masks
from dissectkit.synthetic.probe import synth_id

LAYOUTS = ("vindr-mammo", "vindr-png", "rsna-mammo", "cbis-ddsm", "nih-cxr14", "image-folder")
TRUTH_CSV = "synth_truth.csv"
PROBE_YAML = "probe.yaml"

# DICOM UIDs (pydicom.uid names, kept as strings so this module imports without pydicom)
EXPLICIT_LE = "1.2.840.10008.1.2.1"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage - For Presentation

# Synthetic finding -> VinDr-Mammo finding category (findings VinDr has no category for are left out).
VINDR_CATEGORY = {
    "round mass": "Mass",
    "oval mass": "Mass",
    "irregular mass": "Mass",
    "fine pleomorphic calcifications": "Suspicious Calcification",
    "linear branching calcifications": "Suspicious Calcification",
    "focal asymmetry": "Focal Asymmetry",
    "architectural distortion": "Architectural Distortion",
    "intramammary lymph node": "Suspicious Lymph Node",
    "skin thickening": "Skin Thickening",
    "nipple retraction": "Nipple Retraction",
}
# Synthetic finding -> CBIS-DDSM (csv kind, descriptor 1, descriptor 2); masses take shape and margin.
CBIS_ROW = {
    "round mass": ("mass", "ROUND", None),
    "oval mass": ("mass", "OVAL", None),
    "irregular mass": ("mass", "IRREGULAR", None),
    "architectural distortion": ("mass", "ARCHITECTURAL_DISTORTION", "N/A"),
    "focal asymmetry": ("mass", "FOCAL_ASYMMETRIC_DENSITY", "N/A"),
    "intramammary lymph node": ("mass", "LYMPH_NODE", "N/A"),
    "fine pleomorphic calcifications": ("calc", "PLEOMORPHIC", "CLUSTERED"),
    "linear branching calcifications": ("calc", "FINE_LINEAR_BRANCHING", "LINEAR"),
    "coarse popcorn calcifications": ("calc", "COARSE", "CLUSTERED"),
    "vascular calcifications": ("calc", "VASCULAR", "LINEAR"),
}
CBIS_MARGIN = {"circumscribed margin": "CIRCUMSCRIBED", "spiculated margin": "SPICULATED"}
# Synthetic finding -> NIH ChestX-ray14 finding (the two with a chest X-ray counterpart).
NIH_FINDING = {"round mass": "Mass", "oval mass": "Mass", "irregular mass": "Mass", "intramammary lymph node": "Nodule"}


@dataclass
class ExportResult:
    """What an export wrote: layout, folder, image files, seconds and the probe spec reading it."""

    layout: str
    out: Path
    n_images: int
    seconds: float
    probe: dict[str, Any]


@dataclass
class _Writer:
    """Shared state of one export: the generator, the output folder and the rows collected."""

    gen: SynthMammoGenerator
    out: Path
    truth: list[dict[str, Any]] = field(default_factory=list)
    n_images: int = 0

    def uid(self, *parts: Any) -> str:
        """A DICOM UID fixed by (seed, parts): ``2.25.`` + a 128-bit integer (PS3.5 B.2, UUID-derived)."""
        digest = hashlib.sha256(repr(("dissectkit-replica", self.gen.seed, *parts)).encode()).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def hex_id(self, *parts: Any) -> str:
        """A 32-hex id like VinDr-Mammo's, fixed by (seed, parts)."""
        return hashlib.md5(repr((self.gen.seed, *parts)).encode()).hexdigest()

    def record(self, smp: Sample, index: int, probe_id: str, file: Path) -> None:
        row = {"id": probe_id, "file": file.relative_to(self.out).as_posix(), "index": index, "seed": self.gen.seed}
        row.update(smp.labels)
        self.truth.append(row)

    def png(self, path: Path, arr: np.ndarray) -> None:
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, optimize=False, compress_level=1)
        self.n_images += 1


def stored_pixels(img8: np.ndarray, bits: int, monochrome1: bool, rng: np.random.Generator) -> np.ndarray:
    """``img8`` at ``bits`` (9..16) bits: scaled, dithered within one 8-bit step, inverted for MONOCHROME1."""
    step = 1 << (bits - 8)
    v = img8.astype(np.uint32) * step + rng.integers(0, step, size=img8.shape, dtype=np.uint32)
    if monochrome1:
        v = (1 << bits) - 1 - v
    return v.astype(np.uint16)


def window_for(stored: np.ndarray, margin: int) -> tuple[float, float]:
    """(center, width) of a LINEAR window that maps ``[min - margin, max + margin]`` onto the output
    range (DICOM PS3.3 C.11.2.1.2.1: bottom edge ``c - 0.5 - (w - 1) / 2``, top ``c - 0.5 + (w - 1) / 2``)."""
    lo, hi = int(stored.min()) - margin, int(stored.max()) + margin
    return (lo + hi + 1) / 2.0, float(hi - lo + 1)


def write_dicom(path: Path, pixels: np.ndarray, *, bits: int, photometric: str, syntax: str, uids: dict[str, str],
                tags: dict[str, Any], windows: list[tuple[float, float]] | None = None) -> None:
    """One single-frame grey DICOM (MG, For Presentation) in ``syntax``, deterministic bytes."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = uids["sop"]
    meta.TransferSyntaxUID = UID(EXPLICIT_LE)
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = uids["sop"]
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    alloc = 8 if bits <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = alloc, bits, bits - 1, 0
    if windows:
        ds.WindowCenter = [f"{c:g}" for c, _ in windows] if len(windows) > 1 else f"{windows[0][0]:g}"
        ds.WindowWidth = [f"{w:g}" for _, w in windows] if len(windows) > 1 else f"{windows[0][1]:g}"
        ds.VOILUTFunction = "LINEAR"
    # DX / MG image module: P-values come out as IDENTITY for MONOCHROME2, INVERSE for MONOCHROME1
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    arr = np.ascontiguousarray(pixels.astype(np.uint8 if alloc == 8 else np.uint16))
    ds.PixelData = arr.tobytes()
    if syntax != EXPLICIT_LE:
        ds.compress(UID(syntax), arr, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def _dicom_image(w: _Writer, path: Path, smp: Sample, index: int, *, bits: int, monochrome1: bool, syntax: str,
                 uids: dict[str, str], tags: dict[str, Any], second_window: bool = False) -> None:
    rng = w.gen.rng(index, stream=7)
    stored = stored_pixels(smp.image, bits, monochrome1, rng)
    windows = [window_for(stored, int(rng.integers(0, 4 << (bits - 8))))]
    if second_window:  # a narrower second window, as many real files carry; readers use the first
        c, width = windows[0]
        windows.append((c, float(max(2, int(width * 0.6)))))
    write_dicom(path, stored, bits=bits, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2",
                syntax=syntax, uids=uids, tags=tags, windows=windows)
    w.n_images += 1


def _mg_tags(smp: Sample, patient: str) -> dict[str, Any]:
    lat, view = smp.labels["laterality"], smp.labels["view"]
    return {"PatientID": patient, "ImageLaterality": lat, "Laterality": lat, "ViewPosition": view,
            "BodyPartExamined": "BREAST"}


def _present(smp: Sample) -> list[str]:
    return [c for c in vocab.FINDINGS if smp.labels.get(c)]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(xmin, ymin, xmax, ymax) of a mask in pixels (max exclusive), or None when empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _oriented(smp: Sample, mask: np.ndarray) -> np.ndarray:
    """A finding's mask in the written image's orientation (left breasts are flipped)."""
    return mask[:, ::-1] if smp.labels["laterality"] == "L" else mask


def _finding_boxes(smp: Sample, mapping: dict[str, str]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(category, box) per drawn finding that ``mapping`` knows, in drawing order."""
    out = []
    for f in smp.findings:
        cat = mapping.get(f.concepts[0])
        box = _bbox(_oriented(smp, f.mask)) if cat else None
        if cat and box:
            out.append((cat, box))
    return out


def _birads(smp: Sample) -> int:
    """BI-RADS assessment from the true findings: 4 suspicious, 2 benign finding, 1 negative."""
    have = set(_present(smp))
    if have & set(vocab.MALIGNANT_FINDINGS):
        return 5 if "spiculated margin" in have else 4
    return 2 if have else 1


def _write_csv(path: Path, header: list[str], rows: Iterable[Iterable[Any]], trailing_comma: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        wr.writerow(header + ([""] if trailing_comma else []))
        for row in rows:
            wr.writerow(list(row) + ([""] if trailing_comma else []))


def _split(index: int) -> bool:
    """True when item ``index`` goes to the test split (every fifth)."""
    return index % 5 == 4


def _vindr_ids(w: _Writer, index: int) -> tuple[str, str, str]:
    study = w.hex_id("study", index // 4)  # four images per study, like a screening exam
    return study, w.hex_id("series", index // 4, index % 4 // 2), w.hex_id("image", index)


def _vindr_mammo(w: _Writer, n: int) -> dict[str, Any]:
    breast, findings = [], []
    for i in range(n):
        smp = w.gen.sample(i)
        study, series, image = _vindr_ids(w, i)
        h, wd = smp.image.shape
        lab = smp.labels
        common = [study, series, image, lab["laterality"], lab["view"], h, wd, f"BI-RADS {_birads(smp)}",
                  f"DENSITY {lab['composition']}"]
        split = "test" if _split(i) else "training"
        breast.append([*common, split])
        boxes = _finding_boxes(smp, VINDR_CATEGORY)
        for cat, (x0, y0, x1, y1) in boxes:
            fb = 4 if cat in ("Mass", "Suspicious Calcification", "Architectural Distortion") and _birads(smp) >= 4 else 3
            findings.append([*common, repr([cat]), f"BI-RADS {fb}", f"{x0:.2f}", f"{y0:.2f}", f"{x1:.2f}", f"{y1:.2f}", split])
        if not boxes:
            findings.append([*common, "['No Finding']", "", "", "", "", "", split])
        path = w.out / "images" / study / f"{image}.dicom"
        syntax = (EXPLICIT_LE, RLE_LOSSLESS, J2K_LOSSLESS)[i % 3]
        _dicom_image(w, path, smp, i, bits=12, monochrome1=i % 2 == 1, syntax=syntax,
                     uids={"study": w.uid("study", i // 4), "series": w.uid("series", i // 4, i % 4 // 2),
                           "sop": w.uid("sop", i)},
                     tags=_mg_tags(smp, study), second_window=i % 4 == 3)
        w.record(smp, i, f"{study}/{image}", path)
    head = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads",
            "breast_density"]
    _write_csv(w.out / "breast-level_annotations.csv", [*head, "split"], breast)
    _write_csv(w.out / "finding_annotations.csv",
               [*head, "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"], findings)
    return {"name": "vindr-mammo", "params": {"root": str(w.out), "layout": "dicom", "box_masks": True}}


def _vindr_png(w: _Writer, n: int) -> dict[str, Any]:
    rows = []
    for i in range(n):
        smp = w.gen.sample(i)
        study, _, image = _vindr_ids(w, i)
        lab = smp.labels
        base = [study, f"{image}.png", lab["laterality"], lab["view"], f"BI-RADS {_birads(smp)}",
                f"DENSITY {lab['composition']}", "test" if _split(i) else "training", i % 4]
        boxes = _finding_boxes(smp, VINDR_CATEGORY)
        for cat, box in boxes or [(None, None)]:  # a row per finding; one all-zero row without findings
            flags = [int(c == cat) for c in VINDR_FINDINGS]
            rows.append([*base, *flags, *(box if box else ("", "", "", ""))])
        path = w.out / study / f"{image}.png"
        w.png(path, smp.image)
        w.record(smp, i, f"{study}/{image}", path)
    header = ["patient_id", "image_id", "laterality", "view", "breast_birads", "density", "split", "fold",
              *(c.replace(" ", "_") for c in VINDR_FINDINGS), "xmin", "ymin", "xmax", "ymax"]
    _write_csv(w.out / "vindr_detection_v1_folds.csv", header, rows)
    return {"name": "vindr-mammo", "params": {"root": str(w.out), "layout": "png"}}


def _rsna_mammo(w: _Writer, n: int) -> dict[str, Any]:
    rows = []
    for i in range(n):
        smp = w.gen.sample(i)
        rng = w.gen.rng(i, stream=8)
        patient = 10000 + i // 4
        image = int.from_bytes(hashlib.md5(repr((w.gen.seed, "rsna", i)).encode()).digest()[:4], "little") % 2_000_000_000 + 1
        lab = smp.labels
        cancer = lab["malignancy"]
        birads = "" if cancer else ("2" if _present(smp) else "1")
        age = f"{float(45 + (patient * 7919) % 35):.1f}"  # one age per patient
        rows.append([1 + patient % 2, patient, image, lab["laterality"], lab["view"], age, cancer,
                     int(cancer or rng.random() < 0.05), int(cancer and rng.random() < 0.6), birads,
                     lab["breast implant"], lab["composition"], 29 + patient % 3 * 20, "False"])
        path = w.out / "train_images" / str(patient) / f"{image}.dcm"
        syntax = EXPLICIT_LE if i % 4 == 0 else J2K_LOSSLESS  # most RSNA files are JPEG 2000 inside DICOM
        _dicom_image(w, path, smp, i, bits=12, monochrome1=i % 3 == 1, syntax=syntax,
                     uids={"study": w.uid("rsna-study", patient), "series": w.uid("rsna-series", i), "sop": w.uid("rsna", i)},
                     tags=_mg_tags(smp, str(patient)))
        w.record(smp, i, f"{patient}/{image}", path)
    header = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy", "invasive", "BIRADS",
              "implant", "density", "machine_id", "difficult_negative_case"]
    _write_csv(w.out / "train.csv", header, rows)
    return {"name": "rsna-mammo", "params": {"root": str(w.out), "split": "train"}}


def _cbis_abnormalities(smp: Sample) -> list[tuple[str, str, str, np.ndarray, bool]]:
    """(kind, descriptor 1, descriptor 2, ROI mask, malignant) per abnormality CBIS-DDSM can describe."""
    out = []
    for f in smp.findings:
        spec = CBIS_ROW.get(f.concepts[0])
        if spec is None:
            continue
        kind, d1, d2 = spec
        if d2 is None:  # a mass: its margin is the finding's second concept
            d2 = CBIS_MARGIN[f.concepts[1]]
        mask = _oriented(smp, finding_masks(f)[f.concepts[0]])
        malignant = any(c in vocab.MALIGNANT_FINDINGS for c in f.concepts)
        if mask.any():
            out.append((kind, d1, d2, mask, malignant))
    return out


def _cbis_ddsm(w: _Writer, n: int) -> dict[str, Any]:
    rows: dict[tuple[str, str], list[list[Any]]] = {}
    order: dict[str, list[tuple[str, Sample, int, Path]]] = {"train": [], "test": []}
    for i in range(n):
        smp = w.gen.sample(i)
        abn = _cbis_abnormalities(smp)
        if not abn:
            continue  # CBIS-DDSM holds only cases with a mass or calcifications
        rng = w.gen.rng(i, stream=8)
        split = "test" if _split(i) else "train"
        folder = "Test" if split == "test" else "Training"
        patient = f"P_{i:05d}"
        side = "LEFT" if smp.labels["laterality"] == "L" else "RIGHT"
        view = smp.labels["view"]
        density = vocab.COMPOSITION_LETTERS.index(smp.labels["composition"]) + 1
        for kind in ("mass", "calc"):
            mine = [a for a in abn if a[0] == kind]
            if not mine:
                continue
            case = f"{'Mass' if kind == 'mass' else 'Calc'}-{folder}_{patient}_{side}_{view}"
            full = f"{case}/{w.uid(case, 'study')}/{w.uid(case, 'series')}/000000.dcm"
            full_path = w.out / full
            _dicom_image(w, full_path, smp, i, bits=16, monochrome1=False, syntax=EXPLICIT_LE,
                         uids={"study": w.uid(case, "study"), "series": w.uid(case, "series"), "sop": w.uid(case, "sop")},
                         tags=_mg_tags(smp, f"{case}"))
            order[split].append((kind, smp, i, full_path))
            for k, (_, d1, d2, mask, malignant) in enumerate(mine, start=1):
                roi_case = f"{case}_{k}"
                st, se = w.uid(roi_case, "study"), w.uid(roi_case, "series")
                crop_rel, roi_rel = f"{roi_case}/{st}/{se}/000000.dcm", f"{roi_case}/{st}/{se}/000001.dcm"
                x0, y0, x1, y1 = _bbox(mask)
                crop = smp.image[y0:y1, x0:x1].astype(np.uint16) * 257
                tags = {"PatientID": roi_case, "ImageLaterality": smp.labels["laterality"], "BodyPartExamined": "BREAST"}
                write_dicom(w.out / crop_rel, crop, bits=16, photometric="MONOCHROME2", syntax=EXPLICIT_LE,
                            uids={"study": st, "series": se, "sop": w.uid(roi_case, "crop")}, tags=tags)
                write_dicom(w.out / roi_rel, mask.astype(np.uint8) * 255, bits=8, photometric="MONOCHROME2",
                            syntax=EXPLICIT_LE, uids={"study": st, "series": se, "sop": w.uid(roi_case, "roi")}, tags=tags)
                pathology = "MALIGNANT" if malignant else ("BENIGN" if rng.random() < 0.6 else "BENIGN_WITHOUT_CALLBACK")
                assessment = 4 + int(malignant and rng.random() < 0.5) if malignant else int(rng.integers(2, 4))
                rows.setdefault((kind, split), []).append(
                    [patient, density, side, view, k, "mass" if kind == "mass" else "calcification", d1, d2,
                     assessment, pathology, int(rng.integers(1, 6)), full, crop_rel, roi_rel])
    tail = ["assessment", "pathology", "subtlety", "image file path", "cropped image file path", "ROI mask file path"]
    for split in ("train", "test"):
        # the release's quirk: the mass CSVs say "breast_density", the calcification CSVs "breast density"
        _write_csv(w.out / f"mass_case_description_{split}_set.csv",
                   ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                    "abnormality type", "mass shape", "mass margins", *tail], rows.get(("mass", split), []))
        _write_csv(w.out / f"calc_case_description_{split}_set.csv",
                   ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                    "abnormality type", "calc type", "calc distribution", *tail], rows.get(("calc", split), []))
        # the probe lists a split's mass images, then its calcification images; repeats get ~2
        items = sorted(order[split], key=lambda t: (t[0] != "mass", t[2]))
        base_ids = [f"P_{i:05d}/{'LEFT' if s.labels['laterality'] == 'L' else 'RIGHT'}_{s.labels['view']}"
                    for _, s, i, _ in items]
        for (_, smp, i, path), pid in zip(items, unique_ids(base_ids), strict=True):
            w.record(smp, i, pid, path)
    return {"name": "cbis-ddsm", "params": {"root": str(w.out), "split": "train", "abnormality": "both"}}


def _nih_cxr14(w: _Writer, n: int) -> dict[str, Any]:
    entries, boxes, train_val, test = [], [], [], []
    for i in range(n):
        smp = w.gen.sample(i)
        patient, follow = i // 3 + 1, i % 3
        name = f"{patient:08d}_{follow:03d}.png"
        found = {NIH_FINDING[c] for c in _present(smp) if c in NIH_FINDING}
        labels = "|".join(f for f in NIH_FINDINGS if f in found) or "No Finding"
        h, wd = smp.image.shape
        entries.append([name, labels, follow, patient, 40 + patient % 40, "F", "PA", wd, h, "0.143", "0.143"])
        for cat, (x0, y0, x1, y1) in _finding_boxes(smp, NIH_FINDING):
            boxes.append([name, cat, f"{x0:.6g}", f"{y0:.6g}", f"{x1 - x0:.6g}", f"{y1 - y0:.6g}"])
        (test if _split(i) else train_val).append(name)
        part = "images_001" if i < (n + 1) // 2 else "images_002"
        path = w.out / part / "images" / name
        w.png(path, smp.image)
        w.record(smp, i, name, path)
    _write_csv(w.out / "Data_Entry_2017.csv",
               ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"],
               entries, trailing_comma=True)
    # the release's header is "Bbox [x,y,w,h]" unquoted, i.e. four columns, and three trailing commas
    with open(w.out / "BBox_List_2017.csv", "w", newline="") as fh:
        fh.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        wr = csv.writer(fh, lineterminator="\n")
        for row in boxes:
            wr.writerow([*row, "", "", ""])
    (w.out / "train_val_list.txt").write_text("".join(f"{x}\n" for x in train_val))
    (w.out / "test_list.txt").write_text("".join(f"{x}\n" for x in test))
    return {"name": "nih-cxr14", "params": {"root": str(w.out)}}


def _image_folder(w: _Writer, n: int) -> dict[str, Any]:
    for i in range(n):
        smp = w.gen.sample(i)
        cls = "malignant" if smp.labels["malignancy"] else "benign"
        rel = Path(cls) / f"{synth_id(w.gen.seed, i)}.png"
        path = w.out / "images" / rel
        w.png(path, smp.image)
        for concept, mask in smp.masks.items():
            if mask.any():
                w.png(w.out / "masks" / concept / rel, mask.astype(np.uint8) * 255)
                w.n_images -= 1  # masks are not probe images
        w.record(smp, i, rel.as_posix(), path)
    w.truth.sort(key=lambda r: r["id"])  # the probe lists files in path order
    return {"name": "image-folder", "params": {"root": str(w.out / "images"), "masks_root": str(w.out / "masks")}}


WRITERS: dict[str, Callable[[_Writer, int], dict[str, Any]]] = {
    "vindr-mammo": _vindr_mammo,
    "vindr-png": _vindr_png,
    "rsna-mammo": _rsna_mammo,
    "cbis-ddsm": _cbis_ddsm,
    "nih-cxr14": _nih_cxr14,
    "image-folder": _image_folder,
}


def _write_truth(w: _Writer) -> None:
    keys = ["id", "file", "index", "seed", *vocab.FINDINGS, "composition", "density", "malignancy_true", "malignancy",
            "laterality", "view"]
    _write_csv(w.out / TRUTH_CSV, keys, ([r[k] for k in keys] for r in w.truth))


def read_truth(out: str | Path) -> list[dict[str, str]]:
    """The ``synth_truth.csv`` of an export: one dict per probe image, in the probe's order."""
    return read_csv(Path(out) / TRUTH_CSV, ["id", "file", "index"]).records()


def export_world(layout: str, n: int, out: str | Path, seed: int = 0, size: tuple[int, int] = (320, 192),
                 force: bool = False) -> ExportResult:
    """Write generator items ``0..n-1`` of ``seed`` in ``layout`` under ``out`` (see the module doc)."""
    import yaml

    if layout not in WRITERS:
        raise DataError(f"Unknown layout {layout!r}.{did_you_mean(layout, LAYOUTS)} Layouts: {', '.join(LAYOUTS)}.")
    if n < 1:
        raise DataError(f"--n must be at least 1 (got {n}).")
    try:
        gen = SynthMammoGenerator(seed=seed, size=size)
    except ValueError as exc:
        raise DataError(f"synth export: {exc}") from None
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise DataError(f"{out} exists and is not an empty folder; choose another --out or pass --force to write into it.")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    w = _Writer(gen, out)
    probe = WRITERS[layout](w, n)
    _write_truth(w)
    (out / PROBE_YAML).write_text(
        f"# written by `dissectkit synth export --layout {layout} --n {n} --seed {seed} --height {gen.h} "
        f"--width {gen.w}`; use as a recipe's probe\n"
        + yaml.safe_dump({"probe": probe}, sort_keys=False)
    )
    return ExportResult(layout, out, w.n_images, time.perf_counter() - t0, probe)
