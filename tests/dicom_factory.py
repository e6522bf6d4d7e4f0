"""Writes small real DICOM files with pydicom (used by the dicom / probe tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                with_pixels: bool = True, syntax: str | None = None, laterality: str = "L", view: str = "CC",
                bits_allocated: int = 16, signed: bool = False, palette: np.ndarray | None = None) -> Path:
    """A mammography-like DICOM (MG modality, real tags) holding ``pixels`` (``HxW``, or ``FxHxW`` for a
    multi-frame file). ``palette``: a 256x3 uint16 colour table (PALETTE COLOR, 8-bit indices)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "P0001"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "PALETTE COLOR" if palette is not None else photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if palette is not None:
        for i, colour in enumerate(("Red", "Green", "Blue")):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", palette[:, i].astype("<u2").tobytes())
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
        ds.VOILUTFunction = "LINEAR"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if with_pixels:
        if syntax is not None and syntax != ExplicitVRLittleEndian:
            from pydicom.encaps import encapsulate

            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 64])  # not decodable
            ds["PixelData"].VR = "OB"
        else:
            dtype = {8: "u1", 16: "u2"}[bits_allocated]
            ds.PixelData = pixels.astype(("<i" if signed else "<u") + dtype[1]).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def mammogram(h: int = 120, w: int = 80, seed: int = 0, breast_value: int = 3000, left: bool = True) -> np.ndarray:
    """A synthetic 12-bit mammogram: dark background, a bright half-ellipse breast on one side."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cx = 0 if left else w - 1
    inside = ((xx - cx) / (0.7 * w)) ** 2 + ((yy - h / 2) / (0.42 * h)) ** 2 <= 1
    img = rng.integers(0, 60, size=(h, w))
    img[inside] = breast_value + rng.integers(-400, 400, size=int(inside.sum()))
    return img.astype(np.uint16)
