"""Network Dissection labelling vs extraction on the synthetic quickstart recipe (CPU).

    .venv/bin/python benchmarks/netdissect.py [--images 500] [--full-size]

Prints in one run: the extraction with the spatial capture (fresh cache), then for every layer
netdissect's labelling from the cached maps on its comparison grid (``resolution: 112``, the
default) and its ratio to the extraction; with ``--full-size`` also at the masks' own size
(``resolution: null``, 320 x 192 on this probe: what dissectkit compared at before the grid; its
thresholds then come from histograms where the exact merge outgrows ``max_memory_mb``), with its
ratio to the default.
Times are CPU seconds of this process (robust to other load on the machine) and wall seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--full-size", action="store_true", help="also label at the masks' size and by histogram")
    args = ap.parse_args()

    import torch

    import dissectkit as dk
    from dissectkit.engine.cache import Cache
    from dissectkit.engine.extract import extract_and_embed, finish_extraction
    from dissectkit.engine.resolve import resolve
    from dissectkit.engine.spatial import SpatialSource
    from dissectkit.labelling.evidence import Evidence

    overrides = [f"probe.params.n={args.images}", "output.reporters=[csv]", "runtime.device=cpu",
                 "runtime.batch_size=100", "method={name: netdissect}"]
    res = resolve(dk.load_recipe("recipes/quickstart.yaml", overrides))
    slot = next(iter(res.targets.values()))
    variants = {"grid 112": {}}
    if args.full_size:  # 8x the pixels: the exact merge of a late layer outgrows 512 MB, so histograms
        variants["mask size"] = {"resolution": None}
    print(f"synthetic quickstart, netdissect, N={args.images}, threads={torch.get_num_threads()} (CPU s / wall s)")
    with tempfile.TemporaryDirectory() as tmp:
        ex, cpu_x, wall_x = timed(lambda: finish_extraction(extract_and_embed(res, Cache(tmp)), False))
        print(f"extraction (with the spatial capture) {cpu_x:7.1f} / {wall_x:6.1f}")
        valid = torch.ones(len(res.probe), dtype=torch.bool)
        totals = dict.fromkeys(variants, 0.0)
        for layer in (info.name for info in slot.layers):
            src = SpatialSource(ex.spatial[(slot.label, layer)], ex.masks[slot.label], valid, 100)
            ev = Evidence(layer, torch.zeros(len(res.probe), 1), torch.zeros(len(res.probe), 1), res.concepts,
                          None, spatial_maps=src, seed=0, device="cpu")
            for name, params in variants.items():
                _, c, w = timed(lambda p=params, ev=ev: dk.create("method", "netdissect", **p).label(ev))
                totals[name] += c
                print(f"{layer:12s} {name:9s} labelling {c:7.1f} / {w:6.1f}")
        base = totals["grid 112"]
        for name, c in totals.items():
            print(f"all layers, {name:9s}: labelling {c:7.1f} CPU s   label / extraction {c / cpu_x:5.2f}"
                  f"   vs grid 112 {c / base:5.1f}x")


if __name__ == "__main__":
    main()
