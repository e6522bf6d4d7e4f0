"""Probe ids for a run's tables: one cached ``ids()`` call + indexing vs the old per-item ``ids()[i]``
pattern (the list rebuilt for every image: quadratic), on the synthetic probe.

The old pattern is timed on the first ``--sample`` items and scaled to ``--n`` (each call costs the
same full rebuild), then checked once at a smaller full size to show it really is quadratic.
Also times ``ids()`` of a file probe (image-folder over an exported replica) of ``--files`` images.

    .venv/bin/python benchmarks/probe_ids.py [--n 20000] [--sample 400] [--files 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def cached_ids(n: int) -> tuple[float, list[str]]:
    """Seconds for the new pattern: one ``ids()`` then ``ids[i]`` per item (a fresh probe)."""
    from dissectkit.synthetic.probe import SynthMammoProbe

    t = time.process_time()
    probe = SynthMammoProbe(n=n)
    ids = probe.ids()
    out = [str(ids[i]) for i in range(n)]
    return time.process_time() - t, out


def per_item_ids(n: int, items: int) -> tuple[float, list[str]]:
    """Seconds for the old pattern over the first ``items`` items: the whole list rebuilt per image."""
    from dissectkit.synthetic.probe import SynthMammoProbe

    probe = SynthMammoProbe(n=n)
    t = time.process_time()
    out = [str(probe.make_ids()[i]) for i in range(items)]
    return time.process_time() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--sample", type=int, default=400)
    ap.add_argument("--files", type=int, default=300)
    args = ap.parse_args()

    new_s, new_ids = cached_ids(args.n)
    old_sample_s, old_ids = per_item_ids(args.n, args.sample)
    assert old_ids == new_ids[: args.sample]
    old_s = old_sample_s * args.n / args.sample
    print(f"{args.n} synthetic ids, one ids() call + indexing: {new_s * 1000:.1f} ms CPU")
    print(f"{args.n} synthetic ids, per-item ids()[i] (old): {old_s:.1f} s CPU "
          f"(measured {old_sample_s:.2f} s over {args.sample} items, scaled)")
    print(f"speed-up: {old_s / max(new_s, 1e-9):.0f}x")
    small = max(args.n // 10, 1)
    full_small, _ = per_item_ids(small, small)
    print(f"check at {small} ids: per-item pattern {full_small:.2f} s CPU measured in full; a quadratic cost "
          f"predicts {old_s / 100:.2f} s (1/100 of the {args.n}-id figure)")

    import dissectkit as dk
    from dissectkit.base.context import BuildContext
    from dissectkit.synthetic.export import export_world

    with tempfile.TemporaryDirectory() as tmp:
        res = export_world("image-folder", args.files, Path(tmp) / "w")
        t = time.process_time()
        probe = dk.create("probe", "image-folder", _ctx=BuildContext(device="cpu"), root=res.probe["params"]["root"])
        build = time.process_time() - t
        t = time.process_time()
        ids = probe.ids()
        _ = [ids[i] for i in range(len(probe))]
        print(f"image-folder probe of {len(probe)} files: listing {build * 1000:.1f} ms, "
              f"ids() + indexing {(time.process_time() - t) * 1000:.2f} ms CPU")


if __name__ == "__main__":
    main()
