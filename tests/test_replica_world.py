"""The replica world: the synthetic world exported in each publisher's layout, read back by the real
probes, keeps its ground truth and gives the quickstart's labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DataError
from dissectkit.host.recipe import recipe_from_dict
from dissectkit.synthetic import vocab
from dissectkit.synthetic.export import LAYOUTS, export_world, read_truth, stored_pixels, window_for
from dissectkit.synthetic.generator import SynthMammoGenerator

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
PNG_LAYOUTS = ("vindr-png", "nih-cxr14", "image-folder")
DICOM_LAYOUTS = ("vindr-mammo", "rsna-mammo", "cbis-ddsm")
N_SMALL = 24
N_RUN = 200
CTX = BuildContext(device="cpu")
GEN = SynthMammoGenerator(seed=0)


def open_probe(res):
    return dk.create("probe", res.probe["name"], _ctx=CTX, **res.probe["params"])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("replica-small")
    return {layout: export_world(layout, N_SMALL, root / layout) for layout in LAYOUTS}


def test_window_and_depth_round_trip_by_the_standard():
    """The stored 12-bit pixels through the DICOM LINEAR window and MONOCHROME1 inversion give the
    8-bit image back up to a linear map (computed here from PS3.3 C.11.2.1.2.1, not with pydicom)."""
    img8 = GEN.sample(3).image
    for mono1 in (False, True):
        stored = stored_pixels(img8, 12, mono1, np.random.default_rng(0))
        assert stored.max() <= 4095 and len(np.unique(stored)) > len(np.unique(img8))  # real 12-bit data
        c, w = window_for(stored, margin=7)
        x = stored.astype(np.float64)
        y = np.clip(((x - (c - 0.5)) / (w - 1) + 0.5), 0, 1) * 4095
        assert y.min() > 0 and y.max() < 4095  # the window holds the whole stored range
        if mono1:
            y = 4095 - y
        unit = (y - y.min()) / (y.max() - y.min())
        ref = (img8 - img8.min()) / float(img8.max() - img8.min())
        assert np.abs(unit - ref).max() < 16 / 4095 * 255 / (img8.max() - img8.min()) + 1e-9


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_keeps_ids_pixels_and_truth(small, layout):
    res = small[layout]
    p = open_probe(res)
    truth = {r["id"]: r for r in read_truth(res.out)}
    ids = p.ids()
    assert ids is p.ids() and len(set(ids)) == len(ids) == len(p)
    assert (res.out / "probe.yaml").is_file() and yaml.safe_load((res.out / "probe.yaml").read_text())["probe"] == res.probe
    for i in range(len(p)):
        item = p[i]
        t = truth[item.id]
        assert item.id == ids[i]
        assert p.records[i].path == res.out / t["file"]  # the id names the file
        smp = GEN.sample(int(t["index"]))
        ref = smp.image.astype(np.float64)
        arr = np.asarray(item.image, dtype=np.float64)
        if layout in PNG_LAYOUTS:
            np.testing.assert_array_equal(arr, ref)
        else:  # 12/16-bit: the same image up to the dither inside one 8-bit step
            unit = (arr - arr.min()) / (arr.max() - arr.min())
            assert np.abs(unit - (ref - ref.min()) / (ref.max() - ref.min())).max() < 0.01
        _check_labels(layout, item, smp, t)


def _check_labels(layout, item, smp, t):
    lab, truth_lab = item.labels, smp.labels
    assert int(t["malignancy_true"]) == truth_lab["malignancy_true"] and t["composition"] == truth_lab["composition"]
    have = {c for c in vocab.FINDINGS if truth_lab[c]}
    masses = have & set(vocab.MASS_SHAPES)
    if layout in ("vindr-mammo", "vindr-png"):
        assert lab["Mass"] == int(bool(masses)) and lab["density"] == truth_lab["composition"]
        assert lab["Suspicious Calcification"] == int(bool(have & {"fine pleomorphic calcifications",
                                                                   "linear branching calcifications"}))
        if layout == "vindr-mammo" and masses:  # box masks hold the whole finding
            assert (item.masks["mass"] | ~smp.masks[next(iter(masses))]).all()
    elif layout == "rsna-mammo":
        assert lab["cancer"] == truth_lab["malignancy"] and lab["implant"] == truth_lab["breast implant"]
        assert lab["density"] == truth_lab["composition"] and lab["laterality"] == truth_lab["laterality"]
    elif layout == "cbis-ddsm":
        if "mass" in lab["abnormality"]:
            for shape in masses:
                word = shape.split()[0]
                assert word in lab["mass_shape"]
                np.testing.assert_array_equal(item.masks[word], smp.masks[shape])  # the ROI mask is the finding's
        if "fine pleomorphic calcifications" in have and "calcification" in lab["abnormality"]:
            np.testing.assert_array_equal(item.masks["pleomorphic"], smp.masks["fine pleomorphic calcifications"])
    elif layout == "nih-cxr14":
        assert lab["Mass"] == int(bool(masses)) and lab["Nodule"] == truth_lab["intramammary lymph node"]
    else:
        assert lab["class"] == ("malignant" if truth_lab["malignancy"] else "benign")
        assert set(item.masks) == {c for c, m in smp.masks.items() if m.any()}
        for c, m in item.masks.items():
            np.testing.assert_array_equal(m, smp.masks[c])


def test_dicom_files_follow_the_standard(small):
    import pydicom

    seen = set()
    for layout in ("vindr-mammo", "rsna-mammo"):
        for rec in open_probe(small[layout]).records:
            ds = pydicom.dcmread(rec.path)
            seen.add((ds.file_meta.TransferSyntaxUID.name, ds.PhotometricInterpretation))
            assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
            assert ds.Modality == "MG" and ds.VOILUTFunction == "LINEAR" and "WindowCenter" in ds
            assert ds.PresentationLUTShape == ("INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY")
            assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
            assert int(ds.pixel_array.max()) <= 4095
    syntaxes = {s for s, _ in seen}
    assert {"Explicit VR Little Endian", "RLE Lossless", "JPEG 2000 Image Compression (Lossless Only)"} <= syntaxes
    assert {p for _, p in seen} == {"MONOCHROME1", "MONOCHROME2"}


def test_export_is_deterministic_and_refuses_a_full_folder(small, tmp_path):
    again = export_world("vindr-mammo", N_SMALL, tmp_path / "again")
    for f in ("breast-level_annotations.csv", "finding_annotations.csv", "synth_truth.csv"):
        assert (again.out / f).read_bytes() == (small["vindr-mammo"].out / f).read_bytes()
    rec = open_probe(again).records[1]
    assert rec.path.read_bytes() == (small["vindr-mammo"].out / rec.path.relative_to(again.out)).read_bytes()
    with pytest.raises(DataError, match="not an empty folder.*--force"):
        export_world("vindr-mammo", 2, tmp_path / "again")
    with pytest.raises(DataError, match="Unknown layout 'vindr'"):
        export_world("vindr", 2, tmp_path / "x")


def test_export_cli(tmp_path, capsys):
    from dissectkit.cli.app import main

    assert main(["synth", "export", "--layout", "nih-cxr14", "--n", "3", "--out", str(tmp_path / "nih"),
                 "--height", "64", "--width", "40"]) == 0
    assert "Wrote 3 images in the nih-cxr14 layout" in capsys.readouterr().out.replace("\n", " ")
    assert [r["id"] for r in read_truth(tmp_path / "nih")] == ["00000001_000.png", "00000001_001.png", "00000001_002.png"]
    assert np.asarray(open_probe(export_world("vindr-png", 1, tmp_path / "tiny", size=(64, 40)))[0].image).shape == (64, 40)
    assert main(["synth", "export", "--layout", "vindr-dicom", "--n", "3", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'vindr-mammo'" in capsys.readouterr().err.replace("\n", " ").lower()
    assert main(["synth", "export", "--layout", "rsna-mammo", "--n", "3", "--out", str(tmp_path / "y"),
                 "--height", "16"]) == 2
    assert "too small" in capsys.readouterr().err


def test_cbis_duplicate_views_get_distinct_ids(small):
    """An image with a mass and calcifications is two CBIS files (Mass- and Calc- series) of one view."""
    p = open_probe(small["cbis-ddsm"])
    ids = p.ids()
    doubled = [i for i in ids if i.endswith("~2")]
    assert doubled, "the fixture has an image with both a mass and calcifications"
    first = ids.index(doubled[0][:-2])
    assert "Mass-Training" in str(p.records[first].path) and "Calc-Training" in str(p.records[ids.index(doubled[0])].path)


# -- the quickstart's target and dissector over every layout -------------------------------------------
def _labels(probe_spec: dict, out: Path, cache: Path):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["probe"] = probe_spec
    data["target"]["layers"] = ["classifier"]
    data["output"] = {"dir": str(out), "reporters": ["json"]}
    data["runtime"].update(device="cpu", cache_dir=str(cache))
    result = dk.run(recipe_from_dict(data))
    (ls,) = result.label_sets
    return ls.layers["classifier"].top1(), result.measures[ls.key]["classifier"]["top1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("replica-runs")


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_quickstart_labels_agree_with_the_in_memory_world(layout, runs):
    res = export_world(layout, N_RUN, runs / "data" / layout)
    probe = open_probe(res)
    truth = {r["id"]: int(r["index"]) for r in read_truth(res.out)}
    indices = [truth[i] for i in probe.ids()]
    cache = runs / "cache"
    got, acc = _labels(res.probe, runs / "out" / layout, cache)
    ref, ref_acc = _labels({"name": "synth-mammo", "params": {"indices": indices, "seed": 0}}, runs / "ref" / layout, cache)
    agree = float(np.mean([a == b for a, b in zip(got, ref, strict=True)]))
    print(f"\n{layout}: {len(indices)} images, top-1 agreement {agree:.3f}, accuracy {acc:.3f} (in memory {ref_acc:.3f})")
    if layout in PNG_LAYOUTS:
        assert got == ref
    else:
        assert agree >= 0.9 and abs(acc - ref_acc) <= 0.05
