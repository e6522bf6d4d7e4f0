"""The one running top-k (``dissectkit.labelling.streaming.RunningTopK``) on its two report paths.

1. The run's top images (``streaming_top_images``): N=20,000 rows of K=2,048 neurons in a real
   cache entry (chunks of 1,024 rows, one row in 97 invalid, one in 101 skipped, ties in every
   7th neuron), top 10 and top 100.
2. The card collector's top with a payload: 4,000 images in batches of 32, K=1,024 neurons, top 5,
   an 8x8 float16 map per kept pair (asked for only when the pair enters).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/running_top.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dissectkit.engine.cache import Cache
from dissectkit.labelling.streaming import RunningTopK
from dissectkit.results.evidence import streaming_top_images


def best_of(fn, reps: int = 3):
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def top_images(tmp: Path) -> None:
    N, K, chunk = 20_000, 2048, 1024
    g = torch.Generator().manual_seed(0)
    entry = Cache(tmp).entry("acts", "bench", N, chunk, {})
    for c in range(entry.n_chunks):
        rows = entry.chunk_range(c)
        values = torch.randn(len(rows), K, generator=g).relu_()
        values[:, ::7] = torch.randint(0, 4, (len(rows), (K + 6) // 7), generator=g).float()
        valid = torch.ones(len(rows), dtype=torch.bool)
        valid[::97] = False
        entry.write_chunk(c, values, valid)
    for n in (10, 100):
        t, top = best_of(lambda n=n: streaming_top_images(entry, n, skipped=range(0, N, 101)))
        print(f"top images  N={N} K={K} chunk={chunk} n={n}: {t:.3f} s (checksum {sum(map(sum, top.indices))})")


def card_top() -> None:
    n_images, K, batch, k = 4000, 1024, 32, 5
    g = torch.Generator().manual_seed(1)
    values = torch.randn(n_images, K, generator=g)
    maps = torch.randn(n_images, K, 8, 8, generator=g).half().numpy()

    def run():
        top = RunningTopK(k)
        for s in range(0, n_images, batch):
            def cut(units, positions, s=s):
                return maps[s + np.asarray(positions), np.asarray(units)]

            top.update(values[s : s + batch], np.arange(s, s + batch), cut)
            top.kept_rows()  # the collector reads the kept images after each batch
        return top.result()

    t, kept = best_of(run)
    print(f"card top    N={n_images} K={K} batch={batch} k={k}, 8x8 maps: {t:.3f} s "
          f"(checksum {int(kept.indices.sum())}, {float(kept.payload.double().sum()):.3f})")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dk-bench-top-"))
    try:
        top_images(tmp)
        card_top()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
