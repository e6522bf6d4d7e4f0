"""Probe datasets on fixtures written in each publisher's layout (real file and column names)."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import mammogram, write_dicom
from PIL import Image

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DataError

CTX = BuildContext(device="cpu")



def declares_masks(name: str, **params) -> bool:
    """What the probe's one declaration (its registration) says for these params."""
    from dissectkit.host.manager import get_host

    spec = get_host().registry.get("probe", name)
    return spec.probe_has_masks(spec.validate(params))

def probe(name, ctx=CTX, **kw):
    return dk.create("probe", name, _ctx=ctx, **kw)


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


# -- generic ------------------------------------------------------------------------------------------
def test_image_folder_classes_masks_and_selection(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(4 if cls == "cat" else 2):
            _png(tmp_path / "img" / cls / f"{i}.png", np.full((8, 8), 10 * i, np.uint8))
    _png(tmp_path / "masks" / "ear" / "cat" / "1.png", np.eye(8, dtype=np.uint8) * 255)
    p = probe("image-folder", root=str(tmp_path / "img"), masks_root=str(tmp_path / "masks"))
    assert len(p) == 6 and declares_masks("image-folder", root=str(tmp_path / "img"), masks_root=str(tmp_path / "masks"))
    assert not declares_masks("image-folder", root=str(tmp_path / "img"))
    item = p[1]
    assert item.id == "cat/1.png" and item.labels == {"class": "cat"}
    np.testing.assert_array_equal(item.masks["ear"], np.eye(8, dtype=bool))
    assert p[0].masks == {}
    bal = probe("image-folder", root=str(tmp_path / "img"), balance_by="class")
    assert sorted(bal[i].labels["class"] for i in range(len(bal))) == ["cat", "cat", "dog", "dog"]
    sub = probe("image-folder", root=str(tmp_path / "img"), max_images=3, seed=1)
    again = probe("image-folder", root=str(tmp_path / "img"), max_images=3, seed=1)
    assert [r.id for r in sub.records] == [r.id for r in again.records] and len(sub) == 3
    assert sub.fingerprint() == again.fingerprint() != p.fingerprint()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images under .*empty"):
        probe("image-folder", root=str(tmp_path / "empty"))


def test_csv_probe_missing_and_strict(tmp_path):
    _png(tmp_path / "a.png", np.zeros((6, 6), np.uint8))
    Image.fromarray(np.full((6, 6), 1000, np.uint16)).save(tmp_path / "b.png")  # 16-bit PNG
    _png(tmp_path / "m.png", np.pad(np.ones((2, 2), np.uint8), 2))
    (tmp_path / "list.csv").write_text("path,label,score,roi\na.png,benign,0.5,m.png\nb.png,malignant,2,\nc.png,benign,1,\n")
    p = probe("csv", root=str(tmp_path / "list.csv"), mask_columns=["roi"])
    assert len(p) == 2 and p.skipped == [("c.png", f"file not found: {tmp_path / 'c.png'}")]
    assert p[0].labels == {"label": "benign", "score": 0.5}
    assert p[0].masks["roi"].sum() == 4
    img = p[1].image
    assert isinstance(img, np.ndarray) and img.dtype == np.uint16 and img.max() == 1000
    with pytest.raises(DataError, match="does not exist"):
        probe("csv", ctx=BuildContext(device="cpu", strict_data=True), root=str(tmp_path / "list.csv"))
    with pytest.raises(DataError, match=r"lacks the column\(s\) 'file'.*Columns found: 'path', 'label', 'score', 'roi'"):
        probe("csv", root=str(tmp_path / "list.csv"), path_column="file")
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="Cannot read image"):
        p[0]


# -- VinDr-Mammo -------------------------------------------------------------------------------------
BREAST_HDR = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split\n"
FIND_HDR = ("study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
            "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split\n")


def test_vindr_dicom_layout(tmp_path):
    rows = [("s1", "i1", "L", "CC", "BI-RADS 4", "DENSITY C", "training"),
            ("s1", "i2", "L", "MLO", "BI-RADS 1", "DENSITY C", "training"),
            ("s2", "i3", "R", "CC", "BI-RADS 2", "DENSITY B", "test")]
    (tmp_path / "breast-level_annotations.csv").write_text(
        BREAST_HDR + "".join(f"{s},ser,{i},{lat},{v},120,80,{b},{d},{sp}\n" for s, i, lat, v, b, d, sp in rows))
    (tmp_path / "finding_annotations.csv").write_text(
        FIND_HDR
        + "s1,ser,i1,L,CC,120,80,BI-RADS 4,DENSITY C,\"['Mass', 'Suspicious Calcification']\",BI-RADS 4,1,2,30,40,training\n"
        + "s1,ser,i1,L,CC,120,80,BI-RADS 4,DENSITY C,\"['Mass']\",BI-RADS 4,5,5,20,20,training\n"
        + "s1,ser,i2,L,MLO,120,80,BI-RADS 1,DENSITY C,\"['No Finding']\",,,,,,training\n")
    write_dicom(tmp_path / "images" / "s1" / "i1.dicom", mammogram(seed=1), photometric="MONOCHROME1",
                window=(1500, 3000))
    write_dicom(tmp_path / "images" / "s1" / "i2.dicom", mammogram(seed=2, left=False))
    # i3 is missing: skipped and counted
    p = probe("vindr-mammo", root=str(tmp_path))
    assert len(p) == 2 and [s[0] for s in p.skipped] == ["s2/i3"]
    it = p[0]
    assert it.id == "s1/i1" and it.labels["findings"] == ["Mass", "Suspicious Calcification"]
    assert it.labels["Mass"] == 1 and it.labels["Architectural Distortion"] == 0
    assert (it.labels["birads"], it.labels["density"], it.labels["view"]) == (4, "C", "CC")
    assert it.image.dtype == np.uint16 and it.image.shape == (120, 80)
    assert p[1].labels["findings"] == []
    train = probe("vindr-mammo", root=str(tmp_path), split="training")
    assert len(train) == 2 and not train.skipped
    crop = probe("vindr-mammo", root=str(tmp_path), breast_crop=True)[1].image
    assert crop.shape[0] < 120 and crop.shape[1] < 80 and crop.dtype == np.uint16
    boxed = probe("vindr-mammo", root=str(tmp_path), box_masks=True)
    assert declares_masks("vindr-mammo", root=str(tmp_path), box_masks=True) and not declares_masks("vindr-mammo", root=str(tmp_path))
    m = boxed[0].masks
    assert set(m) == {"mass", "suspicious calcification"}
    assert m["mass"].sum() == 29 * 38 and m["suspicious calcification"].sum() == 29 * 38  # union of both boxes
    assert boxed[1].masks == {}
    # with the breast crop, masks are cut like the image
    cropped = probe("vindr-mammo", root=str(tmp_path), box_masks=True, breast_crop=True)[0]
    assert cropped.masks["mass"].shape == cropped.image.shape


def test_vindr_mammo_clip_png_layout(tmp_path):
    hdr = "patient_id,image_id,laterality,view,breast_birads,density,split,fold,Mass,Suspicious_Calcification,Focal_Asymmetry\n"
    (tmp_path / "vindr_detection_v1_folds.csv").write_text(
        hdr
        + "s1,i1.png,L,CC,BI-RADS 4,DENSITY C,training,0,1,0,0\n"
        + "s1,i1.png,L,CC,BI-RADS 4,DENSITY C,training,0,0,1,0\n"  # a row per finding, same image
        + "s1,i2.png,L,MLO,BI-RADS 1,DENSITY C,training,1,0,0,0\n"
        + "s2,i3.png,R,CC,BI-RADS 2,DENSITY B,test,0,0,0,1\n")
    for s, i in (("s1", "i1"), ("s1", "i2"), ("s2", "i3")):
        _png(tmp_path / s / f"{i}.png", np.full((152, 91), 100, np.uint8))
    p = probe("vindr-mammo", root=str(tmp_path))
    assert len(p) == 3
    assert p[0].labels["findings"] == ["Mass", "Suspicious Calcification"] and p[0].id == "s1/i1"
    assert p[2].labels["Focal Asymmetry"] == 1 and p[2].labels["density"] == "B"
    assert len(probe("vindr-mammo", root=str(tmp_path), split="test")) == 1
    bal = probe("vindr-mammo", root=str(tmp_path), balance_by="density")
    assert sorted(bal[i].labels["density"] for i in range(len(bal))) == ["B", "C"]


# -- RSNA ---------------------------------------------------------------------------------------------
def test_rsna(tmp_path):
    hdr = ("site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density,"
           "machine_id,difficult_negative_case\n")
    (tmp_path / "train.csv").write_text(hdr + "2,10006,462822612,L,CC,61.0,0,0,0,,0,,29,False\n"
                                        "2,10006,1459541791,L,MLO,61.0,1,1,1,0,0,B,29,False\n")
    for img in ("462822612", "1459541791"):
        write_dicom(tmp_path / "train_images" / "10006" / f"{img}.dcm", mammogram(seed=int(img) % 7), bits_stored=16)
    # RSNA's files are mostly JPEG-2000 inside DICOM
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    j2k = tmp_path / "train_images" / "10006" / "1459541791.dcm"
    ds = pydicom.dcmread(j2k)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.save_as(j2k)
    p = probe("rsna-mammo", root=str(tmp_path))
    assert len(p) == 2 and p[1].id == "10006/1459541791"
    assert p[1].labels["cancer"] == 1 and p[1].labels["density"] == "B" and p[0].labels["age"] == 61
    assert p[0].image.dtype == np.uint16
    np.testing.assert_array_equal(p[1].image, mammogram(seed=1459541791 % 7))
    (tmp_path / "train.csv").write_text("patient_id,img_id\n1,2\n")
    with pytest.raises(DataError, match=r"'image_id'.*Columns found: 'patient_id', 'img_id'"):
        probe("rsna-mammo", root=str(tmp_path))


# -- CBIS-DDSM ----------------------------------------------------------------------------------------
def test_cbis_masks_per_concept(tmp_path):
    mass_hdr = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
                "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
                "ROI mask file path\n")
    calc_hdr = ("patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,"
                "calc type,calc distribution,assessment,pathology,subtlety,image file path,"
                "cropped image file path,ROI mask file path\n")
    full = "Mass-Training_P_00001_LEFT_CC/1.3.6.1/1.3.6.2/000000.dcm"
    (tmp_path / "mass_case_description_train_set.csv").write_text(
        mass_hdr
        + f"P_00001,3,LEFT,CC,1,mass,IRREGULAR,SPICULATED-ILL_DEFINED,4,MALIGNANT,4,{full},"
          "Mass-Training_P_00001_LEFT_CC_1/a/b/000000.dcm,Mass-Training_P_00001_LEFT_CC_1/a/b/000001.dcm\n"
        + f"P_00001,3,LEFT,CC,2,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,{full},"
          "Mass-Training_P_00001_LEFT_CC_2/a/b/000000.dcm,Mass-Training_P_00001_LEFT_CC_2/a/b/000001.dcm\n")
    (tmp_path / "calc_case_description_train_set.csv").write_text(
        calc_hdr + "P_00002,2,RIGHT,MLO,1,calcification,PLEOMORPHIC,CLUSTERED,4,MALIGNANT,3,"
        "Calc-Training_P_00002_RIGHT_MLO/x/y/000000.dcm,Calc-Training_P_00002_RIGHT_MLO_1/x/y/000000.dcm,"
        "Calc-Training_P_00002_RIGHT_MLO_1/x/y/000001.dcm\n")
    h, w = 60, 40
    write_dicom(tmp_path / full, mammogram(h, w, seed=1))
    m1 = np.zeros((h, w), np.uint16)
    m1[10:20, 5:15] = 255
    m2 = np.zeros((h, w), np.uint16)
    m2[30:40, 5:10] = 255
    write_dicom(tmp_path / "Mass-Training_P_00001_LEFT_CC_1/a/b/000001.dcm", m1, bits_stored=8)
    write_dicom(tmp_path / "Mass-Training_P_00001_LEFT_CC_2/a/b/000001.dcm", m2, bits_stored=8)
    # the calcification case in the NBIA download layout (CSV paths do not exist as written)
    nbia = tmp_path / "CBIS-DDSM"
    write_dicom(nbia / "Calc-Training_P_00002_RIGHT_MLO" / "08-07-2016-DDSM-1" / "1.000000-full mammogram images-2" / "1-1.dcm",
                mammogram(h, w, seed=2))
    m3 = np.zeros((h, w), np.uint16)
    m3[0:5, 0:5] = 255
    write_dicom(nbia / "Calc-Training_P_00002_RIGHT_MLO_1" / "09-06-2017-DDSM-2" / "1.000000-ROI mask images-3" / "1-2.dcm", m3, bits_stored=8)
    write_dicom(nbia / "Calc-Training_P_00002_RIGHT_MLO_1" / "09-06-2017-DDSM-2" / "1.000000-cropped images-4" / "1-1.dcm",
                np.ones((5, 5), np.uint16), bits_stored=8)
    p = probe("cbis-ddsm", root=str(tmp_path))
    assert len(p) == 2 and declares_masks("cbis-ddsm", root=str(tmp_path)) and not p.skipped
    it = p[0]
    assert it.labels["mass_shape"] == ["irregular", "oval"]
    assert it.labels["mass_margins"] == ["spiculated", "ill-defined", "circumscribed"]
    assert it.labels["pathology"] == ["malignant", "benign"] and it.labels["assessment"] == 4
    assert it.masks["spiculated"].sum() == 100 and it.masks["oval"].sum() == 50
    assert it.masks["mass"].sum() == 150 and it.masks["spiculated"].shape == (h, w)
    calc = p[1]
    assert calc.labels["calc_type"] == ["pleomorphic"] and calc.labels["calc_distribution"] == ["clustered"]
    assert calc.labels["density"] == 2 and calc.masks["pleomorphic"].sum() == 25
    assert len(probe("cbis-ddsm", root=str(tmp_path), abnormality="mass")) == 1


# -- NIH ChestX-ray14 ---------------------------------------------------------------------------------
def test_nih_boxes_and_splits(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
        "00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA,64,64,0.143,0.143,\n"
        "00000002_000.png,No Finding,0,2,81,M,PA,64,64,0.143,0.143,\n"
        "00000003_000.png,Infiltration,0,3,40,F,AP,64,64,0.143,0.143,\n")
    (tmp_path / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000001_000.png,Cardiomegaly,10.5,20,30,10,,,\n"
        "00000003_000.png,Infiltrate,0,0,4,8,,,\n")
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000002_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000003_000.png\n")
    _png(tmp_path / "images_001" / "images" / "00000001_000.png", np.zeros((64, 64), np.uint8))
    _png(tmp_path / "images_001" / "images" / "00000002_000.png", np.zeros((64, 64), np.uint8))
    _png(tmp_path / "images_002" / "images" / "00000003_000.png", np.zeros((64, 64), np.uint8))
    p = probe("nih-cxr14", root=str(tmp_path))
    assert len(p) == 3 and declares_masks("nih-cxr14", root=str(tmp_path))
    a = p[0]
    assert a.labels["findings"] == ["Cardiomegaly", "Effusion"] and a.labels["Effusion"] == 1
    assert a.labels["view_position"] == "PA" and a.labels["patient_age"] == "58"
    assert set(a.masks) == {"cardiomegaly"}
    ys, xs = np.nonzero(a.masks["cardiomegaly"])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20, 29, 10, 40)
    assert p[1].masks == {} and p[1].labels["findings"] == []
    assert p[2].masks["infiltration"].sum() == 32
    assert len(probe("nih-cxr14", root=str(tmp_path), split="test")) == 1
    assert len(probe("nih-cxr14", root=str(tmp_path), with_boxes_only=True)) == 2
    with pytest.raises(DataError, match="balance_by='nope' is not a label"):
        probe("nih-cxr14", root=str(tmp_path), balance_by="nope")


# -- ids and the CSV reader ---------------------------------------------------------------------------
def test_every_builtin_probe_has_unique_file_true_ids(tmp_path):
    from layouts import build_layouts

    specs = build_layouts(tmp_path, n=12)
    builtin = {s.name for s in dk.list_components("probe") if s.distribution == "dissectkit"}
    assert builtin <= {spec["name"] for spec in specs.values()}, "a built-in probe without a fixture"
    for name, spec in specs.items():
        p = probe(spec["name"], **spec["params"])
        ids = p.ids()
        assert ids is p.ids(), name  # built once
        assert len(set(ids)) == len(ids) == len(p), name
        assert [p[i].id for i in range(len(p))] == ids, name
        if spec["name"] in ("image-folder", "vindr-mammo", "nih-cxr14"):  # the id names the file
            for pid, rec in zip(ids, p.records, strict=True):
                rel = rec.path.relative_to(p.root).as_posix()
                assert {"image-folder": rel == pid, "nih-cxr14": rec.path.name == pid,
                        "vindr-mammo": rel.endswith(pid + rec.path.suffix)}[spec["name"]], (pid, rel)
    csv_ids = probe("csv", **specs["csv"]["params"]).ids()
    assert csv_ids[:4] == ["case-0", "case-0~2", "case-1", "case-1~2"]  # repeats get ~2, in file order


def test_unique_ids_is_deterministic_and_avoids_taken_names():
    from dissectkit.imaging.files import unique_ids

    assert unique_ids(["a", "b", "a", "a~2", "a"]) == ["a", "b", "a~3", "a~2", "a~4"]
    assert unique_ids([]) == [] and unique_ids(["x", "y"]) == ["x", "y"]


def test_cbis_ids_are_patient_and_view_and_vindr_study_and_image(tmp_path):
    from dissectkit.synthetic.export import export_world

    res = export_world("cbis-ddsm", 12, tmp_path / "cbis")
    p = probe("cbis-ddsm", **res.probe["params"])
    for pid, rec in zip(p.ids(), p.records, strict=True):
        patient, view = pid.split("~")[0].split("/")
        assert f"_{patient}_{view}/" in rec.path.relative_to(p.root).as_posix()


def test_synth_probe_indices_and_ids():
    from dissectkit.synthetic.probe import SynthMammoProbe

    p = SynthMammoProbe(n=5)
    assert p.ids() == [f"synth-0-{i:06d}" for i in range(5)] and p.ids() is p.ids()
    sub = SynthMammoProbe(indices=[3, 1, 3])
    assert len(sub) == 3 and sub.ids() == ["synth-0-000003", "synth-0-000001", "synth-0-000003~2"]
    np.testing.assert_array_equal(sub[0].image, p[3].image)
    assert sub[2].id == "synth-0-000003~2" and sub[1].labels == p[1].labels
    assert sub.fingerprint() != SynthMammoProbe(indices=[3, 1]).fingerprint()
    # without indices the fingerprint is the one cached runs already hold
    assert p.fingerprint() == "synth-mammo:" + __import__("hashlib").sha256(
        b'{"v": 1, "n": 5, "seed": 0, "size": [320, 192], "freq": ' + __import__("json").dumps(
            sorted(p.generator.frequencies.items())).encode() + b', "noise": 0.05}').hexdigest()[:16]
    made = probe("synth-mammo", indices=[2, 0])
    assert made.ids() == ["synth-0-000002", "synth-0-000000"]


def test_read_csv_stdlib_rules(tmp_path):
    from dissectkit.imaging.files import read_csv

    f = tmp_path / "t.csv"
    f.write_bytes("\ufeffa,b,,b\n1,\"x, y\",,2\n\n3\n4,5,6,7,,\n".encode())
    t = read_csv(f, ["a"])
    assert t.columns == ["a", "b", "Unnamed: 2", "b.1"]  # pandas' names for blank and repeated headers
    assert t.rows == [["1", "x, y", "", "2"], ["3", "", "", ""], ["4", "5", "6", "7"]]
    assert t.records()[0] == {"a": "1", "b": "x, y", "Unnamed: 2": "", "b.1": "2"} and t.column("b.1") == ["2", "", "7"]
    f.write_text("a,b\n1,2,3\n")
    with pytest.raises(DataError, match="data row 2 has 3 cells but the header names 2 columns"):
        read_csv(f)
    f.write_text("")
    with pytest.raises(DataError, match="is empty"):
        read_csv(f)
    with pytest.raises(DataError, match="CSV file not found"):
        read_csv(tmp_path / "nope.csv")
    f.write_bytes(b"a\n\xff\xfe\n")
    with pytest.raises(DataError, match="Cannot read CSV"):
        read_csv(f)
