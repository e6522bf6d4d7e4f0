"""CI smoke run in a fresh venv made with the README's quickstart install (no extras): build a small
fixture of every built-in probe in its real layout (runtime dependencies only), then run the
installed ``dissectkit validate`` and ``dissectkit run`` on a tiny recipe for each, through every
reporter. A missing runtime dependency fails here. Not collected by pytest (no ``test_`` prefix).

    .venv/bin/python tests/smoke_layouts.py --dissectkit .venv/bin/dissectkit --work /tmp/smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from layouts import build_layouts  # noqa: E402

REPORTERS = ["csv", "json", "parquet"]


def recipe(name: str, probe: dict, out: Path, cache: Path, html: bool) -> dict:
    """The quickstart's offline components on ``probe``: only the output layer, a small concept set."""
    return {
        "schema_version": 1,
        "name": f"smoke-{name}",
        "dissector": {"name": "synth-clip"},
        "target": {"name": "synth-effnet-concepts", "layers": ["classifier"], "pool": "mean"},
        "probe": probe,
        "concepts": {"name": "synth-mammo-concepts", "params": {"groups": ["findings"]}},
        "method": {"name": "clip-dissect", "params": {"similarity": "soft_wpmi", "similarity_params": {"top_k": 5}}},
        "output": {"dir": str(out), "reporters": REPORTERS + (["html"] if html else [])},
        "runtime": {"device": "cpu", "batch_size": 16, "num_workers": 0, "offline": True, "seed": 0,
                    "cache_dir": str(cache)},
    }


def call(cmd: list[str], log: list[str]) -> None:
    """Run ``cmd``; log its exit and time; raise with its output when it fails."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.append(f"  {Path(cmd[0]).name} {' '.join(cmd[1:])}: exit {proc.returncode} ({time.perf_counter() - t:.1f} s)")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")


def smoke(dissectkit: str, work: Path, k: int, name: str, probe: dict) -> list[str]:
    """validate + run one fixture's recipe and check its outputs; returns the log lines."""
    out = work / "runs" / name
    path = work / "recipes" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe(name, probe, out, work / "cache" / name, html=k % 4 == 0), sort_keys=False))
    log = [f"{name} ({probe['name']})"]
    call([dissectkit, "validate", str(path)], log)
    call([dissectkit, "run", str(path)], log)
    ids = json.loads((out / "labels.json").read_text())["probe_ids"]
    want = expected_ids(name, probe)
    if want is not None and not set(ids) <= want:
        raise RuntimeError(f"{name}: labels.json probe ids do not name the exported files: {sorted(set(ids) - want)[:3]}")
    for rep in REPORTERS:
        if not (out / f"neurons.{rep}").is_file():
            raise RuntimeError(f"{name}: no neurons.{rep} in {out}")
    return log


def expected_ids(name: str, probe: dict) -> set[str] | None:
    """The ids the probe must report: the export's synth_truth.csv ids (None: not a file export)."""
    if name in ("csv", "synth-mammo"):
        return None
    root = Path(probe["params"]["root"])
    truth = root / "synth_truth.csv" if (root / "synth_truth.csv").is_file() else root.parent / "synth_truth.csv"
    with open(truth, newline="") as fh:
        return {row["id"] for row in csv.DictReader(fh)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dissectkit", required=True, help="the installed console script to test")
    ap.add_argument("--work", type=Path, required=True, help="an empty scratch folder")
    ap.add_argument("--n", type=int, default=12, help="images per fixture")
    ap.add_argument("--jobs", type=int, default=2, help="fixtures checked at once")
    args = ap.parse_args()
    t0 = time.perf_counter()
    specs = build_layouts(args.work / "data", n=args.n)
    print(f"built {len(specs)} fixtures in {time.perf_counter() - t0:.1f} s", flush=True)
    (args.work / "recipes").mkdir(parents=True, exist_ok=True)
    failed = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(smoke, args.dissectkit, args.work, k, name, probe)
                   for k, (name, probe) in enumerate(specs.items())]
        for fut in futures:
            try:
                print("\n".join(fut.result()), flush=True)
            except RuntimeError as exc:
                failed.append(str(exc))
    if failed:
        sys.exit("FAILED:\n" + "\n\n".join(failed))
    print(f"smoke: every built-in probe validated and ran in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
