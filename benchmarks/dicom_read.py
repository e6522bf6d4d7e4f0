"""DICOM reading throughput: ``dissectkit.imaging.dicom.read_dicom`` (LUTs, display range, checks) vs a bare
pydicom loop doing the same LUT steps (modality LUT, VOI window, MONOCHROME1 as ``max - x``), in the
same process, on mammogram-sized 12-bit files.

    .venv/bin/python benchmarks/dicom_read.py [--n 16] [--size 2048 1664]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def bare(files: list[Path]) -> float:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    t = time.perf_counter()
    for f in files:
        ds = pydicom.dcmread(str(f))
        arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = arr.max() - arr
        np.rint(arr).astype(np.uint16)
    return time.perf_counter() - t


def ours(files: list[Path], apply_voi: bool) -> float:
    from dissectkit.imaging.dicom import read_dicom

    t = time.perf_counter()
    for f in files:
        read_dicom(f, apply_voi=apply_voi)
    return time.perf_counter() - t


def main() -> None:
    from dicom_factory import mammogram, write_dicom

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, nargs=2, default=(2048, 1664))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = [write_dicom(Path(tmp) / f"{i}.dcm", mammogram(*args.size, seed=i), window=(2000, 3000),
                             photometric="MONOCHROME1" if i % 2 else "MONOCHROME2") for i in range(args.n)]
        bare(files[:2]), ours(files[:2], True)  # warm-up
        b, w, r = bare(files), ours(files, True), ours(files, False)
    print(f"{args.n} files of {args.size[0]} x {args.size[1]}: pydicom loop {b:.2f} s, read_dicom {w:.2f} s "
          f"(ratio {w / b:.2f}), read_dicom apply_voi=False {r:.2f} s (ratio {r / b:.2f})")


if __name__ == "__main__":
    main()
