"""Scale benchmark (issue 14): labelling in bounded memory, Network Dissection's cost, the report's share.

Prints, in one run:

(a) labelling peak memory and time for one synthetic layer (K=2,048 neurons, C=2,000 concepts,
    D=512) at several probe sizes N, the activations *streamed from a cache*: the chunks are first
    written with ``dissectkit.engine.cache``'s ``ChunkedEntry`` into a temporary cache directory, then the
    method labels from ``Evidence(activation_chunks=...)``. Memory is the peak resident set above the
    level just before labelling (``/proc/self/clear_refs`` + ``VmHWM``; the image embeddings
    ``[N, D]`` are an input already in memory and not counted). For N up to ``--baseline-max`` the
    materialised path (all chunks read into one ``[N, K]`` tensor, as the engine did) runs in the
    same process as the baseline: ratios of time and memory, and whether the labels are identical.
(b) Network Dissection (``method: netdissect``) labelling vs extraction time on the synthetic
    quickstart recipe at several probe sizes (manifest timings ``label`` / ``extract_embed``; fresh
    cache each).
(c) the HTML report's share of the quickstart run (timings ``report`` / the sum of all timings).

    python benchmarks/scale.py                      # quick: N = 10k, 100k; netdissect N = 500
    python benchmarks/scale.py --full               # the acceptance sizes (1M needs ~8.4 GB of disk)
    python benchmarks/scale.py --parts a --sizes 10000,1000000 --methods soft_wpmi,cos,mammi
    python benchmarks/scale.py --device cuda        # on a GPU (benchmarks/gpu.sh runs it so)

``--device`` runs every part there: (a) labels with the method and the evidence on that device, (b)
and (c) set ``runtime.device``. ``--report-n`` sets (c)'s probe size (default: the recipe's).

Run with ``OMP_NUM_THREADS`` set on a shared machine. Sizes, methods and parts are configurable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
K, C, D = 2048, 2000, 512
SIMILARITY_METHODS = {"soft_wpmi", "wpmi", "cos", "cos3", "rank_reorder"}


# ------------------------------------------------------------------------------------------ memory
def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class Peak:
    """Peak RSS above the level at entry: the kernel's high-water mark (reset through
    ``/proc/self/clear_refs``), or a 1 ms polling thread where that cannot be reset."""

    def __enter__(self) -> Peak:
        import gc

        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.exact = True
        except OSError:
            self.exact = False
        self.base = _status("VmRSS")
        self.peak = self.base
        self._stop = False
        if not self.exact:
            self._t = threading.Thread(target=self._poll, daemon=True)
            self._t.start()
        self.t0 = time.perf_counter()
        return self

    def _poll(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, _status("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self._stop = True
        if self.exact:
            self.peak = _status("VmHWM")
        else:
            self._t.join()

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


# ------------------------------------------------------------------------------------------ (a)
def write_layer(cache_root: Path, N: int, chunk: int, seed: int = 0):
    """Synthetic activations ``[N, K]`` as cache chunks, generated chunk by chunk, and the
    image embeddings ``[N, D]``. A quarter of the neurons follow an image direction (so labels
    carry signal), the rest are rectified noise; neuron 7 is dead (constant)."""
    import torch

    from dissectkit.engine.cache import Cache

    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, K // 4, generator=g)
    entry = Cache(cache_root).entry("acts", f"scale-{N}", N, chunk, {"synthetic": True, "N": N, "K": K})
    images = torch.empty((N, D), dtype=torch.float32)
    for c in range(entry.n_chunks):
        r = entry.chunk_range(c)
        n = len(r)
        emb = torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=1)
        images[r.start : r.stop] = emb
        A = torch.randn(n, K, generator=g).relu_()
        A[:, : K // 4] += 4.0 * (emb @ W).relu_()
        A[:, 7] = 0.25
        entry.write_chunk(c, A, torch.ones(n, dtype=torch.bool))
    return entry, images


def method_for(name: str, device: str = "cpu"):
    import dissectkit as dk
    from dissectkit.base.context import BuildContext

    ctx = BuildContext(device=device)
    if name in SIMILARITY_METHODS:
        return dk.create("method", "clip-dissect", ctx, similarity=name)
    return dk.create("method", name, ctx)


def part_a(args, tmp: Path) -> list[dict]:
    import torch

    from dissectkit.labelling.evidence import Evidence

    g = torch.Generator().manual_seed(1)
    names = [f"concept {i}" for i in range(C)]
    table = torch.nn.functional.normalize(torch.randn(C + 1, D, generator=g), dim=1)
    lookup = {t: i for i, t in enumerate(names)}

    def encode(texts):
        return table[[lookup.get(t, C) for t in texts]]

    rows = []
    print(f"\n(a) labelling one layer streamed from the cache: K={K}, C={C}, D={D}, chunk={args.chunk} rows")
    print(f"{'N':>9} {'method':>13} {'stream s':>9} {'stream MB':>10} {'materialised s':>15} {'materialised MB':>16} "
          f"{'time x':>7} {'mem x':>7} {'same labels':>12}")
    for N in args.sizes:
        need = N * K * 4 * 1.02
        free = shutil.disk_usage(tmp).free
        if need > free * 0.9:
            print(f"{N:>9} skipped: needs {need / 1e9:.1f} GB of disk under {tmp}, {free / 1e9:.1f} GB free "
                  "(--tmp DIR elsewhere)")
            continue
        t0 = time.perf_counter()
        entry, images = write_layer(tmp / "cache", N, args.chunk)
        t_write = time.perf_counter() - t0

        def chunks(entry=entry):
            for c in range(entry.n_chunks):
                values, valid = entry.read_chunk(c)
                yield values[valid]

        print(f"{N:>9} (wrote {entry.n_chunks} chunks, {N * K * 4 / 1e9:.2f} GB, in {t_write:.1f} s; "
              f"embeddings in memory {images.numel() * 4 / 2**20:.0f} MB)")
        for name in args.methods:
            method = method_for(name, args.device)
            ev = Evidence("layer", None, images, names, encode, activation_chunks=chunks, device=args.device)
            with Peak() as ps:
                streamed = method.label(ev)
            row = {"N": N, "method": name, "stream_s": ps.seconds, "stream_mb": ps.mb}
            if args.baseline_max >= N:  # noqa: SIM300 - N is a size, not a constant
                with Peak() as pm:
                    A, _ = entry.read_all()
                    full = method.label(Evidence("layer", A, images, names, encode, device=args.device))
                    del A
                same = [[c for c, _ in r] for r in full.neurons] == [[c for c, _ in r] for r in streamed.neurons]
                row.update(mat_s=pm.seconds, mat_mb=pm.mb, same=same)
            rows.append(row)
            mat = (f"{row['mat_s']:>15.2f} {row['mat_mb']:>16.0f} {row['stream_s'] / row['mat_s']:>7.2f} "
                   f"{row['stream_mb'] / max(row['mat_mb'], 1e-9):>7.3f} {str(row['same']):>12}"
                   if "mat_s" in row else f"{'-':>15} {'-':>16} {'-':>7} {'-':>7} {'-':>12}")
            print(f"{N:>9} {name:>13} {row['stream_s']:>9.2f} {row['stream_mb']:>10.0f} {mat}", flush=True)
            assert streamed.reasons.get(7) == "dead", "the dead neuron must have no concept"
        del images
        shutil.rmtree(entry.root)
    return rows


# ------------------------------------------------------------------------------------------ (b), (c)
def quickstart(tmp: Path, tag: str, overrides: list[str]) -> dict:
    import dissectkit as dk

    recipe = dk.load_recipe(
        ROOT / "recipes" / "quickstart.yaml",
        [f"output.dir={tmp / ('out-' + tag)}", f"runtime.cache_dir={tmp / ('cache-' + tag)}", *overrides],
    )
    t0 = time.perf_counter()
    res = dk.run(recipe)
    wall = time.perf_counter() - t0
    shutil.rmtree(tmp / ("cache-" + tag), ignore_errors=True)
    return {"timings": dict(res.stats["timings"]), "wall": wall}


def part_b(args, tmp: Path) -> list[dict]:
    print("\n(b) Network Dissection on the synthetic quickstart recipe (method: netdissect, fresh cache)")
    print(f"{'N':>6} {'extract_embed s':>16} {'label s':>9} {'label / extract':>16}")
    rows = []
    for n in args.nd_sizes:
        out = quickstart(tmp, f"nd{n}", [f"probe.params.n={n}", "method={name: netdissect}", "output.reporters=[csv]",
                                         f"runtime.device={args.device}"])
        t = out["timings"]
        rows.append({"N": n, **t})
        print(f"{n:>6} {t['extract_embed']:>16.2f} {t['label']:>9.2f} {t['label'] / t['extract_embed']:>16.2f}", flush=True)
    return rows


def part_c(args, tmp: Path) -> dict:
    print("\n(c) the report's share of the quickstart run (recipes/quickstart.yaml as shipped, fresh cache)")
    out = quickstart(tmp, "qs", [f"runtime.device={args.device}",
                                 *([f"probe.params.n={args.report_n}"] if args.report_n else [])])
    t = out["timings"]
    total = sum(t.values())
    print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()) + f"; wall {out['wall']:.2f} s")
    print(f"  report / total = {t['report']:.2f} / {total:.2f} = {t['report'] / total:.1%}")
    return {**t, "wall": out["wall"], "share": t["report"] / total}


# ------------------------------------------------------------------------------------------ main
def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="acceptance sizes: N=10k,100k,1M; netdissect 500,1000,2000")
    ap.add_argument("--parts", default="abc", help="which parts to run (letters a, b, c)")
    ap.add_argument("--sizes", type=_ints, default=None, help="N for (a), comma-separated (default 10000,100000)")
    ap.add_argument("--methods", default="soft_wpmi", help="(a): clip-dissect similarities and/or mammi, comma-separated")
    ap.add_argument("--baseline-max", type=int, default=100_000, help="(a): largest N also run materialised")
    ap.add_argument("--chunk", type=int, default=4096, help="(a): rows per cache chunk")
    ap.add_argument("--nd-sizes", type=_ints, default=None, help="N for (b) (default 500)")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch directory (default: a new one under $TMPDIR)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--device", default="cpu", help="where to run every part: cpu (default), cuda, cuda:N")
    ap.add_argument("--report-n", type=int, default=None, help="(c): probe size (default: the recipe's)")
    args = ap.parse_args(argv)
    args.sizes = args.sizes or ([10_000, 100_000, 1_000_000] if args.full else [10_000, 100_000])
    args.nd_sizes = args.nd_sizes or ([500, 1000, 2000] if args.full else [500])
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    import torch

    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="dk-scale-", dir=args.tmp))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPUs {os.cpu_count()}, device {args.device}, "
          f"scratch {tmp}")
    figures: dict = {}
    try:
        if "a" in args.parts:
            figures["a"] = part_a(args, tmp)
        if "b" in args.parts:
            figures["b"] = part_b(args, tmp)
        if "c" in args.parts:
            figures["c"] = part_c(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
