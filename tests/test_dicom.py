"""DICOM reading (vs a direct pydicom computation), errors, breast crop and the Mammo-CLIP PNG converter."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import mammogram, write_dicom

from dissectkit.dicom import breast_box, mammo_clip_png, minmax_uint8, read_dicom
from dissectkit.errors import DataError


def _direct(path):
    """The reference: pydicom's own LUT functions, MONOCHROME1 as max - x."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    arr = apply_modality_lut(ds.pixel_array, ds)
    if "WindowCenter" in ds:
        arr = apply_voi_lut(arr, ds)
    arr = np.asarray(arr, dtype=np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


def test_monochrome2_16bit_kept(tmp_path):
    px = (np.arange(64 * 48).reshape(64, 48) * 21 % 4096).astype(np.uint16)
    p = write_dicom(tmp_path / "a.dcm", px)
    out = read_dicom(p)
    assert out.dtype == np.uint16 and out.shape == (64, 48)
    np.testing.assert_array_equal(out, px)  # no LUT: the stored 12-bit values, untouched
    assert out.max() > 255


def test_monochrome1_window_matches_pydicom(tmp_path):
    px = (np.arange(50 * 40).reshape(50, 40) * 37 % 4096).astype(np.uint16)
    p = write_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1", window=(2048, 2000), rescale=(1.0, 0.0))
    out = read_dicom(p)
    ref = _direct(p)
    np.testing.assert_array_equal(out, np.rint(ref).astype(np.uint16))
    # inversion: the brightest stored pixel is now the darkest
    assert out.flat[int(np.argmax(px))] == out.min()


def test_rescale_negative_is_shifted(tmp_path):
    px = np.full((8, 8), 100, np.uint16)
    px[0, 0] = 10
    p = write_dicom(tmp_path / "r.dcm", px, rescale=(2.0, -1024.0))
    out = read_dicom(p)
    ref = px.astype(np.float64) * 2 - 1024
    np.testing.assert_array_equal(out, (ref - ref.min()).astype(np.uint16))


def test_no_pixel_data(tmp_path):
    p = write_dicom(tmp_path / "sr.dcm", np.zeros((4, 4), np.uint16), with_pixels=False)
    with pytest.raises(DataError, match="no pixel data"):
        read_dicom(p)


def test_undecodable_syntax_names_it(tmp_path):
    # MPEG-2 video: no pixel-data plugin of pydicom decodes it
    p = write_dicom(tmp_path / "v.dcm", np.zeros((4, 4), np.uint16), syntax="1.2.840.10008.1.2.4.100")
    with pytest.raises(DataError, match=r"transfer syntax .*1\.2\.840\.10008\.1\.2\.4\.100"):
        read_dicom(p)


def test_corrupt_jpeg2000_names_syntax_and_package(tmp_path):
    p = write_dicom(tmp_path / "j.dcm", np.zeros((4, 4), np.uint16), syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(DataError, match="JPEG 2000.*pylibjpeg-openjpeg"):
        read_dicom(p)


def test_breast_box_longest_runs():
    img = np.zeros((40, 30), np.uint8)
    img[10:30, 5:20] = 200  # breast
    img[2:4, 25:28] = 255  # a label inside the 5-px border is ignored
    img[20, 24] = 255  # an isolated column outside the longest run
    top, bottom, left, right = breast_box(img)
    assert (top, bottom, left, right) == (10, 30, 5, 20)


def test_mammo_clip_png_steps():
    from PIL import Image

    raw = mammogram(200, 120, seed=1)
    out = mammo_clip_png(raw)
    assert out.shape == (1520, 912) and out.dtype == np.uint8
    # the documented steps, written out directly
    u8 = ((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)
    inner = u8[5:-5, 5:-5] > 40
    cols = np.flatnonzero(inner.any(0))
    rows = np.flatnonzero(inner[:, cols.min() : cols.max() + 1].any(1))
    crop = u8[5 + rows.min() : 5 + rows.max() + 1, 5 + cols.min() : 5 + cols.max() + 1]
    ref = np.asarray(Image.fromarray(crop).resize((912, 1520), Image.Resampling.BOX))
    np.testing.assert_array_equal(out, ref)
    assert minmax_uint8(raw).max() == 255


def test_to_png_converter(tmp_path):
    from dissectkit.commands.data import convert_tree

    src = tmp_path / "dcm"
    write_dicom(src / "s1" / "a.dicom", mammogram(seed=2), photometric="MONOCHROME2")
    write_dicom(src / "s2" / "b.dcm", 4095 - mammogram(seed=3), photometric="MONOCHROME1")
    write_dicom(src / "s2" / "bad.dcm", np.zeros((4, 4), np.uint16), with_pixels=False)
    failures = convert_tree(src, tmp_path / "png", workers=2, progress=False)
    assert [f for f, _ in failures] == [str(src / "s2" / "bad.dcm")]
    from PIL import Image

    a = np.asarray(Image.open(tmp_path / "png" / "s1" / "a.png"))
    b = np.asarray(Image.open(tmp_path / "png" / "s2" / "b.png"))
    assert a.shape == b.shape == (1520, 912)
    np.testing.assert_array_equal(a, mammo_clip_png(read_dicom(src / "s1" / "a.dicom")))
    # MONOCHROME1 was inverted: the breast is bright in the PNG too
    assert b.mean() > 60


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
    np.testing.assert_array_equal(read_dicom(tmp_path / "c.dcm"), px)
