"""DICOM reading under the raw-image contract (vs pydicom's own decoding and LUT functions), bad files,
every DICOM test file shipped with pydicom, and `data to-png`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_factory import mammogram, write_dicom

from dissectkit.base.errors import DataError
from dissectkit.imaging.dicom import read_dicom


def test_12bit_is_shifted_onto_16_bits(tmp_path):
    px = (np.arange(64 * 48).reshape(64, 48) * 21 % 4096).astype(np.uint16)
    out = read_dicom(write_dicom(tmp_path / "a.dcm", px))
    assert out.dtype == np.uint16 and out.shape == (64, 48)
    np.testing.assert_array_equal(out, px * 16)  # BitsStored 12: exact, white 4095 -> 65520
    np.testing.assert_array_equal(read_dicom(write_dicom(tmp_path / "b.dcm", px, bits_stored=16)), px)


def test_8bit_stays_8bit(tmp_path):
    px = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.uint8)
    out = read_dicom(write_dicom(tmp_path / "a.dcm", px, bits_stored=8, bits_allocated=8))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, px)


def test_monochrome1_window_matches_pydicom(tmp_path):
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    px = (np.arange(50 * 40).reshape(50, 40) * 37 % 4096).astype(np.uint16)
    p = write_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1", window=(2048, 2000), rescale=(1.0, 0.0))
    out = read_dicom(p)
    ds = pydicom.dcmread(p)
    windowed = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)  # output range 0..4095 (12 bits)
    expected = np.rint((1.0 - windowed / 4095.0) * 65535)  # MONOCHROME1: inverted
    assert out.dtype == np.uint16 and np.abs(out - expected).max() <= 1  # float rounding only
    assert out.flat[int(np.argmax(px))] == 0 and out.flat[int(np.argmin(px))] == 65535
    # apply_voi=False: the stored values, inverted within the 12-bit range, shifted to 16 bits
    np.testing.assert_array_equal(read_dicom(p, apply_voi=False), (4095 - px) * 16)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_match_pydicom(tmp_path, function):
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    px = np.random.default_rng(2).integers(0, 4096, (30, 20)).astype(np.uint16)
    p = write_dicom(tmp_path / "w.dcm", px, window=(1500.5, 800), rescale=(1.0, -24.0))
    ds = pydicom.dcmread(p)
    ds.VOILUTFunction = function
    ds.save_as(p)
    ds = pydicom.dcmread(p)
    lo, hi = 0 * 1.0 - 24, 4095 * 1.0 - 24  # pydicom's window output range: the rescaled stored range
    expected = (apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) - lo) / (hi - lo) * 65535
    assert np.abs(read_dicom(p) - np.rint(expected)).max() <= 1


def test_rescale_and_signed(tmp_path):
    px = np.full((8, 8), 100, np.uint16)
    px[0, 0] = 10
    out = read_dicom(write_dicom(tmp_path / "r.dcm", px, rescale=(2.0, -1024.0)))
    lo, hi = -1024.0, 4095 * 2.0 - 1024  # the stored range 0..4095 through the rescale
    np.testing.assert_array_equal(out, np.rint((px * 2.0 - 1024 - lo) / (hi - lo) * 65535).astype(np.uint16))
    signed = np.array([[-32768, -1], [0, 32767]], np.int16).repeat(3, 0).repeat(3, 1)
    out = read_dicom(write_dicom(tmp_path / "s.dcm", signed, bits_stored=16, signed=True))
    np.testing.assert_array_equal(out, (signed.astype(np.int64) + 32768).astype(np.uint16))


def test_multiframe_frame_parameter(tmp_path):
    frames = np.stack([np.full((6, 5), 1000 * (i + 1), np.uint16) for i in range(3)])
    frames[:, 0, 0] = 0
    p = write_dicom(tmp_path / "mf.dcm", frames)
    assert read_dicom(p).shape == (6, 5) and int(read_dicom(p)[1, 1]) == 1000 * 16
    assert int(read_dicom(p, frame=2)[1, 1]) == 3000 * 16
    with pytest.raises(DataError, match=r"mf\.dcm has 3 frame\(s\); frame 3 is out of range \(0\.\.2\)"):
        read_dicom(p, frame=3)
    single = write_dicom(tmp_path / "one.dcm", frames[1])
    np.testing.assert_array_equal(read_dicom(single, frame=2), read_dicom(single))  # its only frame


def test_palette_colour_is_applied(tmp_path):
    import pydicom
    from pydicom.pixels import apply_color_lut

    lut = np.stack([np.arange(256) * 257, (255 - np.arange(256)) * 257, np.full(256, 30000)], 1).astype(np.uint16)
    idx = np.random.default_rng(1).integers(0, 256, (12, 10)).astype(np.uint8)
    p = write_dicom(tmp_path / "pal.dcm", idx, bits_stored=8, bits_allocated=8, palette=lut)
    out = read_dicom(p)
    assert out.shape == (12, 10, 3) and out.dtype == np.uint16
    np.testing.assert_array_equal(out, apply_color_lut(pydicom.dcmread(p).pixel_array, pydicom.dcmread(p)))
    np.testing.assert_array_equal(out[..., 0], idx.astype(np.uint16) * 257)


# --------------------------------------------------------------------------- bad files
def test_no_pixel_data(tmp_path):
    p = write_dicom(tmp_path / "sr.dcm", np.zeros((4, 4), np.uint16), with_pixels=False)
    with pytest.raises(DataError, match=r"sr\.dcm has no pixel data.*Remove it"):
        read_dicom(p)


def test_no_file_meta(tmp_path):
    import pydicom

    ds = pydicom.dcmread(write_dicom(tmp_path / "a.dcm", mammogram(20, 16)))
    ds.file_meta, ds.preamble = pydicom.dataset.FileMetaDataset(), None
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare, enforce_file_format=False, implicit_vr=False, little_endian=True)  # a bare data set
    assert bare.read_bytes()[128:132] != b"DICM"
    with pytest.raises(DataError, match=r"bare\.dcm has no DICOM file meta header.*Rewrite it"):
        read_dicom(bare)


def test_undecodable_syntax_names_it(tmp_path):
    # MPEG-2 video: no pixel-data plugin of pydicom decodes it
    p = write_dicom(tmp_path / "v.dcm", np.zeros((4, 4), np.uint16), syntax="1.2.840.10008.1.2.4.100")
    with pytest.raises(DataError, match=r"v\.dcm: no decoder .*MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100.*Convert"):
        read_dicom(p)


def test_corrupt_jpeg2000_names_syntax_not_an_installed_package(tmp_path):
    p = write_dicom(tmp_path / "j.dcm", np.zeros((4, 4), np.uint16), syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(DataError, match=r"j\.dcm \(transfer syntax JPEG 2000.*pylibjpeg failed") as err:
        read_dicom(p)
    assert "pylibjpeg-openjpeg" not in str(err.value)  # installed: naming it as the fix would mislead


def test_missing_decoder_names_the_package(tmp_path, monkeypatch):
    import dissectkit.imaging.dicom as dicom

    monkeypatch.setattr(dicom, "_decoder_state", lambda uid: ((), ("pylibjpeg", "gdcm")))
    p = write_dicom(tmp_path / "j.dcm", np.zeros((4, 4), np.uint16), syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(DataError, match=r"JPEG 2000.*not installed.*pip install pylibjpeg-openjpeg or python-gdcm"):
        read_dicom(p)


def test_truncated_file(tmp_path):
    p = write_dicom(tmp_path / "t.dcm", mammogram(40, 30))
    p.write_bytes(p.read_bytes()[:-500])
    with pytest.raises(DataError, match=r"t\.dcm.*(truncated|damaged)"):
        read_dicom(p)


def test_tiny_and_huge_images(tmp_path):
    with pytest.raises(DataError, match=r"one\.dcm is 1 x 1 pixels: too small"):
        read_dicom(write_dicom(tmp_path / "one.dcm", np.ones((1, 1), np.uint16)))
    p = write_dicom(tmp_path / "big.dcm", mammogram(40, 30))
    with pytest.raises(DataError, match=r"big\.dcm is 30 x 40 = 1,200 pixels, over the pixel limit of 1,000"):
        read_dicom(p, max_pixels=1000)


# --------------------------------------------------------------------------- pydicom's own test files
PYDICOM_REFUSED = {  # file -> what the DataError must say
    "ExplVR_BigEndNoMeta.dcm": "no DICOM file meta header", "ExplVR_LitEndNoMeta.dcm": "no DICOM file meta header",
    "no_meta.dcm": "no DICOM file meta header", "rtstruct.dcm": "no DICOM file meta header",
    "JPEG-lossy.dcm": "decoder(s) pillow, pylibjpeg failed",
    "JPEG2000-embedded-sequence-delimiter.dcm": "decoder(s) pillow, pylibjpeg failed",
    "MR_truncated.dcm": "is truncated", "badVR.dcm": "invalid Number of Frames",
    "meta_missing_tsyntax.dcm": "lacks a valid image size", "nested_priv_SQ.dcm": "lacks a valid image size",
    **{f: "has no pixel data" for f in (
        "UN_sequence.dcm", "empty_charset_LEI.dcm", "no_meta_group_length.dcm", "priv_SQ.dcm", "reportsi.dcm",
        "reportsi_with_empty_number_tags.dcm", "rtplan.dcm", "rtplan_truncated.dcm", "test-SR.dcm", "waveform_ecg.dcm")},
}


def _pydicom_reference(path: Path) -> np.ndarray:
    """pydicom's decoding of the first frame, then the documented steps: palette LUT; modality LUT;
    VOI LUT / window; the display range (pydicom's VOI output range, else the stored range through the
    rescale); MONOCHROME1 inverted - as a float image in [0, 1]."""
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        arr = arr[0]
    pi = ds.PhotometricInterpretation
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return rgb / float(np.iinfo(rgb.dtype).max)
    bits = int(ds.BitsStored)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation == 1 else (0, 2**bits - 1)
    if arr.ndim == 3:
        return (arr.astype(np.float64) - lo) / (hi - lo)
    out = apply_modality_lut(arr, ds)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        lo, hi = sorted((lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
                         hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept)))
    if ds.get("VOILUTSequence"):
        out = apply_voi_lut(out, ds)
        lo, hi = 0, 2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    elif "WindowCenter" in ds:
        out = apply_voi_lut(out, ds)  # output range: the (rescaled) stored range, as before
    unit = np.clip((np.asarray(out, np.float64) - lo) / (hi - lo), 0, 1)
    return 1 - unit if pi == "MONOCHROME1" else unit


def test_every_pydicom_test_file_is_read_like_pydicom_or_refused_clearly():
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(folder.glob("*.dcm"))
    assert len(files) >= 78
    read, refused = [], {}
    for f in files:
        try:
            out = read_dicom(f)
        except DataError as exc:
            assert str(f) in str(exc), f"{f.name}: the error does not name the file: {exc}"
            refused[f.name] = str(exc)
            continue
        ref = _pydicom_reference(f)
        assert out.shape == ref.shape, f.name
        assert out.dtype in (np.uint8, np.uint16), f.name
        top = float(np.iinfo(out.dtype).max)
        diff = float(np.abs(out - ref * top).max())  # in levels of the output (1/65535 or 1/255)
        assert diff <= 1, f"{f.name}: differs from pydicom's decoding by {diff:.2f} output levels"
        read.append(f.name)
    assert set(refused) == set(PYDICOM_REFUSED) & {f.name for f in files}, sorted(refused)
    for name, msg in refused.items():
        assert PYDICOM_REFUSED[name] in msg, f"{name}: {msg}"
    assert len(read) + len(refused) == len(files) and len(read) >= 58


# --------------------------------------------------------------------------- data to-png
def test_to_png_converter(tmp_path):
    from PIL import Image

    from dissectkit.cli.commands.data import convert_tree
    from dissectkit.imaging.mammo_png import from_dicom

    src = tmp_path / "dcm"
    write_dicom(src / "s1" / "a.dicom", mammogram(seed=2), photometric="MONOCHROME2")
    write_dicom(src / "s2" / "b.dcm", 4095 - mammogram(seed=3), photometric="MONOCHROME1")
    write_dicom(src / "s2" / "bad.dcm", np.zeros((4, 4), np.uint16), with_pixels=False)
    write_dicom(src / "s3" / "mf.dcm", np.stack([mammogram(seed=4), mammogram(seed=5)]))
    lut = np.repeat((np.arange(256) * 257)[:, None], 3, 1).astype(np.uint16)
    write_dicom(src / "s3" / "pal.dcm", np.zeros((20, 20), np.uint8), bits_stored=8, bits_allocated=8, palette=lut)
    failures = dict(convert_tree(src, tmp_path / "png", workers=2, progress=False))
    assert sorted(failures) == [str(src / "s2" / "bad.dcm"), str(src / "s3" / "pal.dcm")]
    assert "no pixel data" in failures[str(src / "s2" / "bad.dcm")]
    assert "PALETTE COLOR image; Mammo-CLIP's PNG conversion is defined for greyscale" in failures[str(src / "s3" / "pal.dcm")]
    a = np.asarray(Image.open(tmp_path / "png" / "s1" / "a.png"))
    b = np.asarray(Image.open(tmp_path / "png" / "s2" / "b.png"))
    mf = np.asarray(Image.open(tmp_path / "png" / "s3" / "mf.png"))
    assert a.shape == b.shape == mf.shape == (1520, 912)
    np.testing.assert_array_equal(a, from_dicom(src / "s1" / "a.dicom"))
    np.testing.assert_array_equal(mf, from_dicom(src / "s3" / "mf.dcm", frame=0))
    assert b.mean() > 60  # MONOCHROME1 was inverted: the breast is bright in the PNG too


@pytest.mark.parametrize("syntax", ["JPEG2000Lossless", "RLELossless"])
def test_compressed_syntaxes_decode_losslessly(tmp_path, syntax):
    """RSNA ships JPEG-2000 inside DICOM: decoded through pylibjpeg-openjpeg, bit-exact."""
    import pydicom
    from pydicom import uid

    px = mammogram(64, 48, seed=3)
    ds = pydicom.dcmread(write_dicom(tmp_path / "src.dcm", px))
    ds.compress(getattr(uid, syntax), **({"encoding_plugin": "pylibjpeg"} if "JPEG" in syntax else {}))
    ds.save_as(tmp_path / "c.dcm")
    assert pydicom.dcmread(tmp_path / "c.dcm").file_meta.TransferSyntaxUID == getattr(uid, syntax)
    np.testing.assert_array_equal(read_dicom(tmp_path / "c.dcm"), px * 16)


def test_to_png_cli_reports_each_failure_and_exits_2(tmp_path, capsys):
    from dissectkit.cli.app import main

    src = tmp_path / "dcm"
    write_dicom(src / "mf.dcm", np.stack([mammogram(seed=1), mammogram(seed=2)]))
    lut = np.repeat((np.arange(256) * 257)[:, None], 3, 1).astype(np.uint16)
    write_dicom(src / "pal.dcm", np.zeros((20, 20), np.uint8), bits_stored=8, bits_allocated=8, palette=lut)
    code = main(["data", "to-png", str(src), str(tmp_path / "png"), "--workers", "1", "--frame", "1"])
    out = capsys.readouterr()
    assert code == 2 and "internal error" not in out.err + out.out
    flat = "".join(out.out.split())
    assert "pal.dcmisaPALETTECOLORimage" in flat and "1 file(s) could not be converted" in out.err
    assert (tmp_path / "png" / "mf.png").is_file()
    assert main(["data", "to-png", str(src), str(tmp_path / "png2"), "--workers", "1", "--frame", "2"]) == 2
    assert "mf.dcmhas2frame(s);frame2isoutofrange(0..1)" in "".join(capsys.readouterr().out.split())  # rich wraps
