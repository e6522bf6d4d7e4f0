"""Start-up benchmark: `validate`, `layers` and `run`'s resolve stage against bare imports.

    .venv/bin/python benchmarks/startup.py [--recipe recipes/quickstart.yaml] [--repeats 5] [--big resnet50]

Prints, in one run (every command in a fresh interpreter, as a user runs it; min and median of
``--repeats`` runs):
- ``python -c "import torch"`` and ``python -c "import torch, timm"``: the baselines;
- ``dissectkit validate`` and ``dissectkit layers`` of the recipe, with their ratio to the baselines;
- the resolve stage of ``dissectkit run`` (build every component, load weights: what the run's
  manifest calls ``resolve``), with the weights files it read and hashed;
- a cached re-run's start: resolve + the pass over a probe of ``--cached-images`` whose chunks are
  all in the cache (nothing to compute: the target network is never built);
- for a timm ``--big`` model with a checkpoint file: the layers metadata that ``validate`` uses
  (meta device, weights never read) vs building the target (architecture + load + hash).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RESOLVE_SCRIPT = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import dissectkit as dk
from dissectkit.base import weights
from dissectkit.engine import resolve
from dissectkit.host.manager import get_host
counts = {"load": [], "hash": []}
for name, key in (("load_checkpoint", "load"), ("file_fingerprint", "hash")):
    real = getattr(weights, name)
    def counted(path, *a, real=real, key=key, **k):
        counts[key].append(Path(path).name)
        return real(path, *a, **k)
    setattr(weights, name, counted)
get_host()
recipe = dk.load_recipe(sys.argv[1], [a for a in sys.argv[3:] if a != "--fill"])
t1 = time.perf_counter()
res = resolve(recipe)
for s in res.targets.values():
    s.instance.fingerprint()
for d in res.dissectors.values():
    d.fingerprint()
t2 = time.perf_counter()
if sys.argv[2] == "pass":  # then the cached pass over the probe, as `run` does next
    from dissectkit.engine.cache import Cache
    from dissectkit.engine import extract_and_embed
    stats = extract_and_embed(res, Cache(res.ctx.cache_dir))
    assert stats["computed_chunks"] == 0 or "--fill" in sys.argv, stats["computed_chunks"]
t3 = time.perf_counter()
print(json.dumps({"setup": t1 - t0, "resolve": t2 - t1, "pass": t3 - t2, "timm": "timm" in sys.modules, **counts}))
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return wall, out.stdout


def series(cmd: list[str], env: dict[str, str], repeats: int) -> list[float]:
    return [timed(cmd, env)[0] for _ in range(repeats)]


def big_model(name: str, tmp: Path) -> tuple[float, float, float]:
    """(checkpoint MB, seconds of the layers metadata, seconds to build the target) in this process."""
    import timm
    import torch
    from safetensors.torch import save_file

    import dissectkit as dk
    from dissectkit.base.context import BuildContext
    from dissectkit.host.manager import get_host

    ckpt = tmp / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}, str(ckpt))
    ctx = BuildContext(device="cpu", offline=True, cache_dir=tmp / "cache")
    spec = get_host().registry.get("target", "timm")
    params = spec.validate({"model": name, "checkpoint": str(ckpt)})
    spec.metadata["layers"](spec.validate({"model": "resnet10t"}), ctx)  # warm the meta kernels' imports
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    listed = spec.metadata["layers"](params, ctx)
    t1 = time.perf_counter()
    built = dk.create("target", "timm", _ctx=ctx, model=name, checkpoint=str(ckpt))
    built_layers = built.layers()
    t2 = time.perf_counter()
    assert listed == built_layers, "layers metadata differs from the built target"
    return ckpt.stat().st_size / 2**20, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/quickstart.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--big", default="resnet50", help="timm model for the weights-size comparison ('' skips it)")
    ap.add_argument("--cached-images", type=int, default=200, help="probe size of the cached re-run (0 skips it)")
    args = ap.parse_args()

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "DISSECTKIT_CACHE": str(tmp / "cache")}
        rows: dict[str, list[float]] = {}
        rows["python -c 'import torch'"] = series([py, "-c", "import torch"], env, args.repeats)
        rows["python -c 'import torch, timm'"] = series([py, "-c", "import torch, timm"], env, args.repeats)
        rows["dissectkit validate"] = series([py, "-m", "dissectkit.cli", "validate", args.recipe], env, args.repeats)
        rows["dissectkit layers"] = series([py, "-m", "dissectkit.cli", "layers", args.recipe], env, args.repeats)
        resolves, last = [], {}
        for _ in range(args.repeats):
            _, out = timed([py, "-c", RESOLVE_SCRIPT, args.recipe, "resolve"], env)
            last = json.loads(out.strip().splitlines()[-1])
            resolves.append(last["resolve"])
        rows["run: resolve stage (in process)"] = resolves
        cached: dict = {}
        if args.cached_images:
            n = [f"probe.params.n={args.cached_images}"]
            timed([py, "-c", RESOLVE_SCRIPT, args.recipe, "pass", *n, "--fill"], env)
            runs = []
            for _ in range(args.repeats):
                wall, out = timed([py, "-c", RESOLVE_SCRIPT, args.recipe, "pass", *n], env)
                cached = json.loads(out.strip().splitlines()[-1])
                runs.append(wall)
            rows[f"cached re-run start ({args.cached_images} images)"] = runs

        torch_med = statistics.median(rows["python -c 'import torch'"])
        timm_med = statistics.median(rows["python -c 'import torch, timm'"])
        print(f"{args.recipe}, {args.repeats} runs each, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, {os.cpu_count()} CPUs")
        print(f"{'':34s} {'min s':>7s} {'median s':>9s} {'/ torch':>8s} {'/ torch+timm':>13s}")
        for name, values in rows.items():
            med = statistics.median(values)
            print(f"{name:34s} {min(values):7.2f} {med:9.2f} {med / torch_med:8.2f} {med / timm_med:13.2f}")
        print(f"resolve read {sorted(last['load'])} and hashed {sorted(set(last['hash']))} "
              f"({len(last['hash'])} hash calls) once each" if sorted(last["load"]) == sorted(set(last["load"]))
              else f"resolve read weights more than once: {last['load']}")
        if cached:
            print(f"cached re-run: imported timm: {cached['timm']}; read {sorted(cached['load'])}")
        if args.big:
            mb, listed, built = big_model(args.big, tmp)
            print(f"timm {args.big} ({mb:.0f} MB checkpoint): layers metadata {listed:.2f} s (weights not read) vs "
                  f"building the target {built:.2f} s (build + load + hash + forward): {built / listed:.1f}x")


if __name__ == "__main__":
    main()
