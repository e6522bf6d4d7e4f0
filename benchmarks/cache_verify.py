"""Cache verification benchmark: what checking every cache file's blake2b checksum costs a cached re-run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cache_verify.py [--images 512] [--model resnet18] [--repeats 5]

Runs the recipe of benchmarks/engine.py once cold (fills the cache), then re-runs it from the cache
alternately with verification on (every file checked at its first read, as every run does) and off
(``dissectkit.engine.cache.VERIFY = False``: the straightforward baseline, the same run trusting the
cache), in the same process, and prints the best time of each, the overhead in percent of the cached
re-run (need < 5%), the bytes verified, and the time of ``dissectkit cache verify`` over the whole cache (every file a re-run reads, and more)
as a share of the cached re-run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from engine import make_inputs, write_recipe

    import dissectkit as dk
    from dissectkit.engine import cache as cache_mod

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        images, clip_dir, concepts = make_inputs(tmp, args.images)
        recipe = dk.load_recipe(write_recipe(tmp, images, clip_dir, concepts, args.model, args.size, 0))
        dk.run(recipe)  # cold: fills the cache

        def rerun(verify: bool) -> float:
            cache_mod.VERIFY = verify
            cache_mod.reset_verified()  # a new process: nothing verified yet
            t0 = time.perf_counter()
            result = dk.run(recipe)
            seconds = time.perf_counter() - t0
            assert result.stats["chunks"]["computed"] == 0, "the re-run computed chunks: not a cached re-run"
            return seconds

        rerun(True), rerun(False)  # warm up the page cache, imports, threads
        on, off = [], []
        for _ in range(args.repeats):  # alternate, so drift in the machine's load hits both alike
            on.append(rerun(True))
            off.append(rerun(False))
        cache_mod.VERIFY = True
        files = [p for p in (tmp / "cache").rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        t0 = time.perf_counter()
        checked, problems, _ = cache_mod.Cache(tmp / "cache").verify()
        whole = time.perf_counter() - t0
        assert not problems
        best_on, best_off = min(on), min(off)
        print(f"cached re-run  verified {best_on:7.3f} s   trusted (baseline) {best_off:7.3f} s   "
              f"overhead {100 * (best_on - best_off) / best_off:+5.2f} %  (need < 5 %)")
        print(f"cache          {len(files)} files, {size / 2**20:.1f} MiB; `cache verify` of all {checked} files "
              f"{whole:.3f} s ({size / 2**20 / max(whole, 1e-9):.0f} MiB/s) = {100 * whole / best_off:.2f} % of the "
              "cached re-run")


if __name__ == "__main__":
    main()
