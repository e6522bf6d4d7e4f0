"""Probe-loading throughput: a torch DataLoader with workers over a dissectkit probe vs a bare loop
reading the same files (pydicom + the same LUT steps, one process).

Two settings: reading only, and reading + a target's preprocessing (min-max to 8 bits, resize 256,
centre crop 224, normalise: what the engine runs in the workers), where the loop does the same
preprocessing inline.

    .venv/bin/python benchmarks/probes.py [--n 96] [--size 1024 768] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_files(root: Path, n: int, size: tuple[int, int]) -> None:
    from dicom_factory import mammogram, write_dicom

    for i in range(n):
        write_dicom(root / f"s{i % 8}" / f"{i}.dcm", mammogram(*size, seed=i), photometric="MONOCHROME1" if i % 2 else "MONOCHROME2")


def bare_loop(files: list[Path], pre=None) -> float:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    t = time.perf_counter()
    for f in files:
        ds = pydicom.dcmread(str(f))
        arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = arr.max() - arr
        if pre is not None:
            pre(arr.astype(np.uint16))
    return time.perf_counter() - t


class _Pre:
    """Probe item -> preprocessed tensor (picklable for worker processes)."""

    def __init__(self, probe, pre) -> None:
        self.probe, self.pre = probe, pre

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, i: int):
        item = self.probe[i]
        return self.pre(item.image) if self.pre is not None else item.image


def _first(batch):
    return batch


def loader(root: Path, workers: int, pre=None) -> float:
    import torch

    import dissectkit as dk

    probe = dk.create("probe", "image-folder", root=str(root))
    dl = torch.utils.data.DataLoader(_Pre(probe, pre), batch_size=16, num_workers=workers, collate_fn=_first)
    t = time.perf_counter()
    count = sum(len(b) for b in dl)
    assert count == len(probe)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 768))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_files(root, args.n, tuple(args.size))
        files = sorted(root.rglob("*.dcm"))
        import torch

        import dissectkit as dk

        # DataLoader workers run torch with one thread each; give the in-process runs the same, or
        # OpenMP thread hand-offs on tiny per-image tensors dominate (40 ms per Normalize on a busy box)
        torch.set_num_threads(1)
        target = dk.create("target", "densenet121-cxr")  # resize 256, crop 224, normalise
        print(f"{args.n} DICOMs {args.size[0]}x{args.size[1]} uint16, {args.workers} workers")
        for label, pre in (("read only", None), ("read + preprocess", target.preprocess)):
            bare_loop(files[:4], pre)  # warm the page cache and imports
            base = bare_loop(files, pre)
            single = loader(root, 0, pre)
            multi = loader(root, args.workers, pre)
            print(f"[{label}]")
            print(f"  bare loop            : {args.n / base:8.1f} images/s")
            print(f"  probe, DataLoader w=0: {args.n / single:8.1f} images/s  ({base / single:.2f}x bare)")
            print(f"  probe, DataLoader w={args.workers}: {args.n / multi:8.1f} images/s  ({base / multi:.2f}x bare)")


if __name__ == "__main__":
    main()
