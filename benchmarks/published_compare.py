"""End to end, side by side: ``dissectkit run recipes/quickstart.yaml`` (csv, json and the HTML
report) against the published CLIP-Dissect structure (``benchmarks/published_clip_dissect.py``) on
the same synthetic images, models, layers and concept set.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/published_compare.py [--sizes 1000,4000] [--repeats 3] [--reporters csv,json,html]

For each N, ``--repeats`` rounds, the four runs of a round interleaved, each a fresh interpreter
timed from start to exit (wall) with its peak RSS (``wait4``; the main process, not its data workers)
and its CPU seconds (user + system, with the data workers):

- **cold**: fresh activation folder / cache, soft_wpmi (the recipe's similarity);
- **warm**: the same again with another similarity (``cos``): both keep their cached activations
  (the published structure still loads its models and sets up its datasets; dissectkit resolves,
  labels and reports - with the HTML report, whose card images come from the cache).

dissectkit runs as the README's quickstart installs it: the plugins installed in this environment
are disabled (``DISSECTKIT_DISABLE_PLUGINS``). Prints min and median wall per run kind and their ratios (dissectkit / published), and the top-1
agreement of the cold runs' labels (every layer, every neuron). Issue 22's bars: cold <= 0.6x at
N = 1,000 and 4,000; warm with another similarity and the HTML report <= 0.5x.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"
PUBLISHED = ROOT / "benchmarks" / "published_clip_dissect.py"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall seconds, peak RSS in MB of the process itself, CPU seconds - user + system, with the
    workers it waited for -, stdout) of one command."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out.read()


def published(n: int, tmp: Path, similarity: str, env: dict[str, str]) -> tuple[float, float, float, Path]:
    wall, peak, cpu, out = timed([sys.executable, str(PUBLISHED), "--n", str(n), "--concept-set", str(tmp / "words.txt"),
                             "--activation-dir", str(tmp / f"pub-acts-{n}"), "--result-dir", str(tmp / "pub-results"),
                             "--similarity", similarity], env)
    return wall, peak, cpu, Path(out.strip().splitlines()[-1]) / "descriptions.csv"


def quickstart_env(env: dict[str, str]) -> dict[str, str]:
    """dissectkit as the README's quickstart installs it: without the plugins installed in this
    environment (their hooks - e.g. the TensorBoard tracker's - would run in every run)."""
    from importlib import metadata

    plugins = sorted({ep.dist.name for ep in metadata.entry_points(group="dissectkit")
                      if ep.dist is not None and ep.dist.name != "dissectkit"})
    return {**env, "DISSECTKIT_DISABLE_PLUGINS": ",".join(plugins)}


def dissectkit(n: int, tmp: Path, similarity: str, reporters: str, env: dict[str, str]) -> tuple[float, float, float, Path]:
    out = tmp / f"dk-out-{n}-{similarity}"
    sets = [f"probe.params.n={n}", f"runtime.cache_dir={tmp / f'dk-cache-{n}'}", f"output.reporters=[{reporters}]",
            f"method.params.similarity={similarity}"]
    cmd = [sys.executable, "-m", "dissectkit", "run", str(RECIPE), "--quiet", "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    wall, peak, cpu, _ = timed(cmd, quickstart_env(env))
    return wall, peak, cpu, out / "neurons.csv"


def agreement(pub_csv: Path, dk_csv: Path) -> tuple[int, int]:
    with open(pub_csv) as f:
        pub = {(r["layer"], int(r["unit"])): r["description"] for r in csv.DictReader(f)}
    with open(dk_csv) as f:
        ours = {(r["layer"], int(r["unit"])): r["label"] for r in csv.DictReader(f)}
    return sum(pub[k] == ours.get(k) for k in pub), len(pub)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,4000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reporters", default="csv,json,html")
    args = ap.parse_args()
    from dissectkit.synthetic.concepts import synth_concepts

    tmp = Path(tempfile.mkdtemp(prefix="dk-published-"))
    (tmp / "words.txt").write_text("\n".join(c.text for c in synth_concepts(["findings", "distractors"]).concepts))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"quickstart vs the published structure; reporters [{args.reporters}]; OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    try:
        for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
            rows: dict[str, list[float]] = {"pub cold": [], "dk cold": [], "pub warm": [], "dk warm": []}
            cpus: dict[str, list[float]] = {name: [] for name in rows}
            peaks: dict[str, float] = {}
            agree = (0, 0)
            for _ in range(args.repeats):
                shutil.rmtree(tmp / f"pub-acts-{n}", ignore_errors=True)
                shutil.rmtree(tmp / f"dk-cache-{n}", ignore_errors=True)
                for kind, similarity in (("cold", "soft_wpmi"), ("warm", "cos")):
                    csvs = {}
                    for who, run in (("pub", published), ("dk", partial(dissectkit, reporters=args.reporters))):
                        w, p, cpu, csvs[who] = run(n, tmp, similarity, env=env)
                        rows[f"{who} {kind}"].append(w)
                        cpus[f"{who} {kind}"].append(cpu)
                        peaks[f"{who} {kind}"] = max(p, peaks.get(f"{who} {kind}", 0.0))
                    if kind == "cold":
                        agree = agreement(csvs["pub"], csvs["dk"])
            print(f"\nN={n} ({args.repeats} rounds; load average now {os.getloadavg()[0]:.2f})")
            print(f"{'':10s} {'min s':>7s} {'median s':>9s} {'peak RSS MB':>12s} {'median CPU s':>13s}")
            for name, values in rows.items():
                print(f"{name:10s} {min(values):7.2f} {statistics.median(values):9.2f} {peaks[name]:12.0f} "
                      f"{statistics.median(cpus[name]):13.2f}")
            for kind in ("cold", "warm"):
                d, p = rows[f"dk {kind}"], rows[f"pub {kind}"]
                print(f"{kind}: dissectkit / published = {min(d) / min(p):.2f} (min) / "
                      f"{statistics.median(d) / statistics.median(p):.2f} (median)")
            print(f"top-1 agreement (cold, soft_wpmi): {agree[0]}/{agree[1]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
