"""The raw-image contract (dissectkit.imaging.raw): display ranges, PIL modes, image files, bad files,
and the once-per-run almost-constant warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from dissectkit.base.errors import DataError
from dissectkit.imaging import raw as imaging
from dissectkit.imaging.raw import as_array, read_image, to_pil, to_unit_float


def test_display_range_by_dtype():
    a8 = np.array([[0, 51], [255, 128]], np.uint8)
    np.testing.assert_allclose(to_unit_float(a8), a8 / 255.0, atol=1e-7)
    a16 = np.array([[0, 4095], [65535, 1000]], np.uint16)
    np.testing.assert_allclose(to_unit_float(a16), a16 / 65535.0, atol=1e-7)  # never min-max
    f = np.array([[0.25, 0.5], [0.75, 1.0]], np.float32)
    np.testing.assert_array_equal(to_unit_float(f), f)  # floats in [0, 1] as they are
    np.testing.assert_allclose(to_unit_float(f * 1000 - 100), (f - 0.25) / 0.75, atol=1e-6)  # else min-max
    np.testing.assert_array_equal(to_unit_float(np.array([[True, False], [False, True]])), [[1, 0], [0, 1]])
    np.testing.assert_array_equal(as_array(np.array([[3, 70000 // 2]], np.int32).repeat(2, 0)).dtype, np.uint16)
    with pytest.raises(DataError, match="outside 0..65535"):
        as_array(np.array([[-1, 2], [3, 4]], np.int32))


def test_pil_modes():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, (6, 5)).astype(np.uint8)
    pal = Image.fromarray(idx, mode="P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * 756)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    np.testing.assert_array_equal(as_array(pal), colours[idx])  # palette applied
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(as_array(Image.fromarray(rgba, "RGBA")), rgba[..., :3])  # alpha dropped
    g16 = rng.integers(0, 65536, (6, 5)).astype(np.uint16)
    assert as_array(Image.fromarray(g16)).dtype == np.uint16
    assert as_array(Image.fromarray(g16.astype(np.int32), mode="I")).dtype == np.uint16
    assert as_array(Image.fromarray(rng.random((6, 5)).astype(np.float32), mode="F")).dtype == np.float32
    np.testing.assert_array_equal(as_array(Image.fromarray(idx > 1)), (idx > 1) * 255)  # mode "1"
    # an 8-bit image and its 16-bit version give the same 8-bit model input
    a8 = rng.integers(0, 256, (6, 5)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(to_pil(a8.astype(np.uint16) * 257, "L")), a8)


def test_too_small_and_invalid():
    with pytest.raises(DataError, match="1 x 1 pixels: too small"):
        as_array(np.zeros((1, 1), np.uint8))
    with pytest.raises(DataError, match="shape"):
        as_array(np.zeros((3, 4, 5, 3), np.uint8))


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_read_image_files(tmp_path):
    rng = np.random.default_rng(1)
    g16 = rng.integers(0, 65536, (12, 10)).astype(np.uint16)
    out = read_image(_png(tmp_path / "g16.png", g16))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, g16)
    rgb = read_image(_png(tmp_path / "rgb.png", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)))
    assert isinstance(rgb, Image.Image) and rgb.mode == "RGB"
    pal = Image.fromarray(rng.integers(0, 3, (12, 10)).astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 255, 255, 9, 99, 199] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (12, 10, 3)
    frames = [Image.fromarray(np.full((8, 9), v, np.uint8)) for v in (10, 20, 30)]
    frames[0].save(tmp_path / "mf.tif", save_all=True, append_images=frames[1:])
    assert np.asarray(read_image(tmp_path / "mf.tif")).max() == 10
    assert np.asarray(read_image(tmp_path / "mf.tif", frame=2)).max() == 30
    with pytest.raises(DataError, match=r"mf\.tif has 3 frame\(s\); frame 3 is out of range \(0\.\.2\)"):
        read_image(tmp_path / "mf.tif", frame=3)


def test_bad_image_files(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"one\.png is 1 x 1 pixels: too small"):
        read_image(_png(tmp_path / "one.png", np.zeros((1, 1), np.uint8)))
    big = _png(tmp_path / "big.png", np.zeros((40, 30), np.uint8))
    with pytest.raises(DataError, match=r"big\.png is 30 x 40 = 1,200 pixels, over the pixel limit of 1,000"):
        read_image(big, max_pixels=1000)
    # Pillow's own decompression-bomb refusal (over twice its MAX_IMAGE_PIXELS) is a DataError too
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(DataError, match=r"big\.png is refused as a decompression bomb"):
        read_image(big)
    monkeypatch.undo()
    cut = tmp_path / "cut.png"
    data = _png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png.*truncated"):
        read_image(cut)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match=r"Cannot read image .*text\.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_dicom_without_suffix_is_detected(tmp_path):
    from dicom_factory import mammogram, write_dicom

    p = write_dicom(tmp_path / "IM0001.dcm", mammogram(20, 16))
    bare = p.rename(tmp_path / "IM0001")
    np.testing.assert_array_equal(read_image(bare), mammogram(20, 16) * 16)


def test_almost_constant_warning_once_per_run_naming_the_file(tmp_path, caplog):
    flat = _png(tmp_path / "flat.png", np.full((8, 8), 1000, np.uint16))
    fine = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    imaging.reset_warnings()  # a run starts (engine.run resets them)
    with caplog.at_level(logging.WARNING, logger="dissectkit.imaging.raw"):
        to_pil(fine, model="target timm")
        assert not caplog.records
        for _ in range(3):
            to_pil(read_image(flat), model="target timm")
        to_unit_float(np.zeros((8, 8), np.uint8), model="dissector open-clip")
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert "target timm receives an almost constant image from probe image" in msg and "flat.png" in msg
    caplog.clear()
    imaging.reset_warnings()  # the next run warns again
    with caplog.at_level(logging.WARNING, logger="dissectkit.imaging.raw"):
        to_pil(np.zeros((8, 8), np.uint8), model="target timm")
    assert len(caplog.records) == 1


def _warn_in_child():
    to_pil(np.zeros((8, 8), np.uint8), model="target timm")


def test_almost_constant_warning_is_shared_with_forked_workers(caplog):
    import multiprocessing

    imaging.reset_warnings()
    child = multiprocessing.get_context("fork").Process(target=_warn_in_child)  # as a DataLoader worker
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with caplog.at_level(logging.WARNING, logger="dissectkit.imaging.raw"):
        to_pil(np.zeros((8, 8), np.uint8), model="target timm")
    assert not caplog.records  # the worker gave this run's warning already
