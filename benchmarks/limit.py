"""The physical limit of the cached pass: dissectkit's extraction against a perfectly overlapped
pipeline, at N = 500, 1,000, 2,000 and 4,000 synthetic images (recipes/quickstart.yaml).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/limit.py [--sizes 500,1000,2000,4000] [--repeats 2]

Prints, for each N (every figure from a fresh interpreter, as a user runs it; min over ``--repeats``):

- **extraction**: ``dk.run`` of the quickstart recipe (``probe.params.n=N``, csv only, a fresh
  cache, ``runtime`` as shipped: ``num_workers: auto``): the manifest's ``extract_embed`` seconds,
  which include starting the data workers and building the target;
- **bare loop**: the straightforward serial loop a user would write, with the models already
  built: per batch, read the images, preprocess them (once: the target and the dissector share
  the transform), run the target with hooks pooling the recipe's layers and the dissector's image
  encoder; torch with the run's compute threads (``stats.processes.threads``: 1 on 2 CPUs - more
  threads than free CPUs make OpenMP spin, which on a shared machine costs up to 10x);
- **forward**: the same forward passes alone, on inputs already in memory (the same threads);
- **data**: the data side alone: read and preprocess every image, serially, one thread (what one
  data worker does);
- **ratio**: extraction / max(data, forward) - the time a perfectly overlapped pipeline (reading
  beside the forward passes) would take; issue 22's bar is <= 1.25 at N = 2,000 and 4,000;
- **img/s**: N / extraction; **ext / fwd**: extraction / forward passes alone.

``--device cuda`` (benchmarks/gpu.sh) runs all of it on that device: the run with ``runtime.device``,
the baselines with the models there, each batch copied there (the forward passes alone: inputs
already there), timed up to ``torch.cuda.synchronize()``. Default: the recipe's device (``auto``;
the baselines on the CPU).

With ``--identical N`` (default 1000; 0: skip) it also runs N images with ``num_workers: 0``
(and the same ``runtime.threads`` as the default run) and checks that labels.json and
neurons.csv are byte-identical to the default run's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"

RUN = """
import json, sys
import dissectkit as dk
rec = dk.load_recipe(sys.argv[1], sys.argv[2:])
result = dk.run(rec)
print(json.dumps({"timings": result.stats["timings"], "threads": result.stats["processes"]["threads"]}))
"""


def run_dissectkit(n: int, tmp: Path, tag: str, extra: list[str], device: str | None = None) -> dict:
    out, cache = tmp / f"out-{tag}", tmp / f"cache-{tag}"
    shutil.rmtree(cache, ignore_errors=True)
    overrides = [f"probe.params.n={n}", "output.reporters=[csv]", f"output.dir={out}", f"runtime.cache_dir={cache}",
                 *([f"runtime.device={device}"] if device else []), *extra]
    proc = subprocess.run([sys.executable, "-c", RUN, str(RECIPE), *overrides], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"dissectkit run failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(cache, ignore_errors=True)
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "out": str(out)}


def baselines(n: int, threads: int, device: str = "cpu") -> dict:
    """In this (fresh) process: data side, forward passes, bare serial loop over the first n images."""
    import torch

    import dissectkit as dk
    from dissectkit.base.context import available_cpus
    from dissectkit.engine.resolve import resolve
    from dissectkit.nn.capture import first_tensor

    rec = dk.load_recipe(RECIPE, [f"probe.params.n={n}", f"runtime.device={device}"])
    res = resolve(rec)
    dev = torch.device(device)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    probe = res.probe
    slot = next(iter(res.targets.values()))
    target, module = slot.instance, slot.instance.module.to(dev)
    dissector = next(iter(res.dissectors.values()))
    shared = target.preprocess_key() is not None and target.preprocess_key() == dissector.preprocess_key()
    layers = [info.name for info in slot.layers]
    bs = rec.runtime.batch_size
    batches = [list(range(i, min(n, i + bs))) for i in range(0, n, bs)]
    pooled: dict[str, list] = {}
    named = dict(module.named_modules())

    def hook(name):
        def keep(_m, _i, out):
            out = first_tensor(out)
            pooled.setdefault(name, []).append(out.mean(dim=(2, 3)) if out.dim() == 4 else out)
        return keep

    handles = [named[layer].register_forward_hook(hook(layer)) for layer in layers]

    def prepare(rows):
        images = [probe[i].image for i in rows]
        xt = torch.stack([target.preprocess(im) for im in images])
        xd = xt if shared else torch.stack([dissector.preprocess(im) for im in images])
        return xt, xd

    def forward(xt, xd):
        module(xt.to(dev, non_blocking=cuda))
        dissector.encode_images(xd.to(dev, non_blocking=cuda))

    with torch.inference_mode():
        torch.set_num_threads(threads)
        forward(*prepare(batches[0]))  # warm up allocator and kernels
        sync()
        pooled.clear()
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        inputs = [prepare(rows) for rows in batches]
        data = time.perf_counter() - t0
        torch.set_num_threads(threads)
        if cuda:  # the forward passes alone: inputs already on the device
            inputs = [(xt.to(dev), xt.to(dev) if xd is xt else xd.to(dev)) for xt, xd in inputs]
            sync()
        t0 = time.perf_counter()
        for xt, xd in inputs:
            forward(xt, xd)
        sync()
        fwd = time.perf_counter() - t0
        del inputs
        pooled.clear()
        t0 = time.perf_counter()
        for rows in batches:
            forward(*prepare(rows))
        sync()
        bare = time.perf_counter() - t0
    for h in handles:
        h.remove()
    return {"data": data, "forward": fwd, "bare": bare, "cpus": available_cpus(), "shared_input": shared}


def measure_baselines(n: int, threads: int, device: str | None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--baselines-for", str(n), "--threads", str(threads),
                           "--device", device or "cpu"],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"baselines failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_outputs(a: str, b: str) -> bool:
    return all((Path(a) / f).read_bytes() == (Path(b) / f).read_bytes() for f in ("labels.json", "neurons.csv"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="500,1000,2000,4000")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--identical", type=int, default=1000, help="N of the num_workers: 0 comparison (0: skip)")
    ap.add_argument("--baselines-for", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the recipe's, auto)")
    args = ap.parse_args()
    if args.baselines_for is not None:
        print(json.dumps(baselines(args.baselines_for, args.threads, args.device or "cpu")))
        return
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="dk-limit-"))
    print(f"{RECIPE.name}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, "
          f"min of {args.repeats}; device {args.device or 'as the recipe (auto)'}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'N':>5} {'extraction s':>13} {'bare loop s':>12} {'forward s':>10} {'data s':>8} {'max(data, fwd)':>15} "
          f"{'ratio':>6} {'ext / bare':>10} {'img/s':>7} {'ext / fwd':>9} {'threads':>8} {'load':>5}")
    try:
        for n in sizes:
            ext, base, threads = [], [], 0
            for r in range(args.repeats):
                run = run_dissectkit(n, tmp, f"{n}-{r}", [], args.device)
                ext.append(run["timings"]["extract_embed"])
                threads = run["threads"]
                base.append(measure_baselines(n, threads, args.device))
            data = min(b["data"] for b in base)
            fwd = min(b["forward"] for b in base)
            bare = min(b["bare"] for b in base)
            best = min(ext)
            print(f"{n:>5} {best:>13.2f} {bare:>12.2f} {fwd:>10.2f} {data:>8.2f} {max(data, fwd):>15.2f} "
                  f"{best / max(data, fwd):>6.2f} {best / bare:>10.2f} {n / best:>7.0f} {best / fwd:>9.2f} {threads:>8} "
                  f"{os.getloadavg()[0]:>5.2f}", flush=True)
        if args.identical:
            n = args.identical
            auto = run_dissectkit(n, tmp, "same-auto", [], args.device)
            serial = run_dissectkit(n, tmp, "same-0", ["runtime.num_workers=0", f"runtime.threads={auto['threads']}"], args.device)
            same = same_outputs(auto["out"], serial["out"])
            print(f"labels.json and neurons.csv at N={n}, num_workers auto vs 0 (threads {auto['threads']}): "
                  f"{'byte-identical' if same else 'DIFFERENT'}")
            if not same:
                raise SystemExit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
