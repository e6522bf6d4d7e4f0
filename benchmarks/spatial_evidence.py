"""Spatial evidence benchmark: Network Dissection from the cached maps vs re-running the target.

    .venv/bin/python benchmarks/spatial_evidence.py [--images 500] [--layers blocks.5 classifier]

On the synthetic quickstart recipe with ``method: netdissect`` (CPU), prints in one run:
- the extraction stage with the spatial capture (one pass, fresh cache) and without it;
- one stream of a layer's ``Evidence.spatial_maps`` from the cache vs from re-running the target
  over the probe (what the engine did before the maps were cached);
- netdissect's labelling time per layer with each source and its ratio to the extraction.
Times are CPU seconds of this process (robust to other load on the machine) and wall seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def rerun_source(res: Any, slot: Any, layer: str, batch: int) -> Callable[[], Iterator[Any]]:
    """The spatial maps computed by running the target over the probe at each stream (baseline)."""

    def stream() -> Iterator[Any]:
        import torch

        from dissectkit.engine.spatial import align_masks
        from dissectkit.labelling.evidence import SpatialBatch
        from dissectkit.nn.capture import Capture, first_tensor
        from dissectkit.nn.layers import spatial_output

        align = getattr(slot.instance, "preprocess_mask", None)
        with Capture.named(slot.instance.module, [layer], lambda _n, o: spatial_output(first_tensor(o)).float()) as cap:
            for b in range(0, len(res.probe), batch):
                items = [res.probe[i] for i in range(b, min(len(res.probe), b + batch))]
                with torch.inference_mode():
                    slot.instance.module(torch.stack([slot.instance.preprocess(it.image) for it in items]))
                yield SpatialBatch(cap.outputs[layer], [align_masks(it.masks, align) for it in items])

    return stream


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--layers", nargs="*", default=["blocks.5", "classifier"])
    args = ap.parse_args()

    import torch

    import dissectkit as dk
    from dissectkit.engine.cache import Cache
    from dissectkit.engine.extract import extract_and_embed, finish_extraction
    from dissectkit.engine.label import TextEncoder
    from dissectkit.engine.resolve import resolve
    from dissectkit.engine.spatial import SpatialSource
    from dissectkit.labelling.evidence import Evidence

    overrides = [f"probe.params.n={args.images}", "output.reporters=[csv]", "runtime.device=cpu", "runtime.batch_size=100"]
    plain = resolve(dk.load_recipe("recipes/quickstart.yaml", [*overrides, "method={name: clip-dissect, params: {similarity: cos}}"]))
    res = resolve(dk.load_recipe("recipes/quickstart.yaml", [*overrides, "method={name: netdissect}"]))
    method = next(iter(res.methods.values()))
    slot = next(iter(res.targets.values()))
    print(f"synthetic quickstart, N={args.images}, threads={torch.get_num_threads()} (CPU s / wall s)")
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        _, cpu0, wall0 = timed(lambda: extract_and_embed(plain, Cache(a)))
        ex, cpu_x, wall_x = timed(lambda: finish_extraction(extract_and_embed(res, Cache(b)), False))
        print(f"extraction without spatial capture {cpu0:7.1f} / {wall0:6.1f}")
        print(f"extraction with spatial capture    {cpu_x:7.1f} / {wall_x:6.1f}   ratio {cpu_x / cpu0:.2f}")
        dissector = next(iter(res.dissectors))
        emb, _ = ex.embeds[dissector].read_all()
        encode = TextEncoder(res.dissectors[dissector], Cache(b))
        valid = torch.ones(len(res.probe), dtype=torch.bool)
        for layer in args.layers:
            cached = SpatialSource(ex.spatial[(slot.label, layer)], ex.masks[slot.label], valid, 100)
            rerun = rerun_source(res, slot, layer, 100)
            _, c_cached, _ = timed(lambda src=cached: sum(1 for _ in src()))
            _, c_rerun, _ = timed(lambda src=rerun: sum(1 for _ in src()))
            print(f"{layer}: one stream of spatial maps: cached {c_cached:.2f}, re-run target {c_rerun:.2f}   ratio {c_rerun / max(c_cached, 1e-9):.0f}x")
            acts, _ = ex.acts[(slot.label, layer)].read_all()
            for name, src in (("cached", cached), ("re-run", rerun)):
                ev = Evidence(layer, acts, emb, res.concepts, encode, spatial_maps=src, seed=0, device="cpu")
                _, c, w = timed(lambda ev=ev: method.label(ev))
                print(f"{layer}: netdissect labelling, {name:6s} maps {c:7.1f} / {w:6.1f}   label / extraction {c / cpu_x:.1f}")


if __name__ == "__main__":
    main()
