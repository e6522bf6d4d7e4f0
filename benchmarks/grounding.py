"""Grounding (the ``grounding`` column group, docs/methods.md "Grounding"): what it costs and whether it
tells right labels from wrong ones.

``cost``: the quickstart (recipes/quickstart.yaml) run with ``output.columns.grounding`` off and on, in
the same process, after a warm-up run that caches the activations and the spatial maps; "on" is timed
with the layer thresholds already kept next to the cached maps and with them recomputed (a quantile
the cache has not seen). Prints each time and the ratio on / off; then the same off / on as whole runs
(``dissectkit run`` in a fresh interpreter: what a user waits for).

``auc``: every method on the final conv layer of ``synth-effnet-planted`` (one class activation map
per finding, 12 random channels; truth known) over the synthetic probe with masks; per method, the
AUC of each grounding score (``grounding_iou``, ``grounding_above_chance``, ``pointing``,
``pointing_above_chance``) separating right top-1 labels (label == the channel's planted concept)
from wrong ones (any other label, or any label of a random channel); and of ``pointing_above_chance``
with the wrong labels of planted channels only.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grounding.py [cost|auc|both] [--n 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["clip-dissect", "mammi", "netdissect", "mammo-factor"]


def _quickstart(out: Path, n: int, columns: dict[str, Any]) -> dict[str, Any]:
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["probe"]["params"]["n"] = n
    recipe["output"] = {"dir": str(out), "reporters": ["csv"], "columns": columns}
    return recipe


def _timed(recipe: dict[str, Any]) -> float:
    import dissectkit as dk
    from dissectkit.host.recipe import recipe_from_dict
    from dissectkit.labelling import grounding

    grounding._MEMO.clear()  # nothing carried over in this process: only the on-disk cache
    t0 = time.perf_counter()
    dk.run(recipe_from_dict(copy.deepcopy(recipe)))
    return time.perf_counter() - t0


def cost(n: int, repeat: int, out: Path) -> None:
    _timed(_quickstart(out / "warm", n, {}))  # caches activations, spatial maps, thresholds
    cases = {
        "grounding off": {"grounding": False},
        "grounding on (thresholds cached)": {},
        "grounding on (thresholds recomputed)": None,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(repeat):
        for name, columns in cases.items():
            if columns is None:  # a quantile not seen before: the thresholds are computed again
                columns = {"grounding": {"quantile": 0.005 + 1e-6 * (r + 1)}}
            times[name].append(_timed(_quickstart(out / f"r{r}", n, columns)))
    base = statistics.median(times["grounding off"])
    print(f"quickstart, n={n}, median of {repeat} runs, activations and spatial maps cached")
    print("  in this process (dk.run: the labelling, the columns, csv):")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"    {name:40s} {t:7.2f} s   x{t / base:.3f} of off   (runs: {', '.join(f'{x:.2f}' for x in ts)})")
    whole = {name: [_cli(n, columns, out / f"cli-{name[-3:].strip()}-{r}") for r in range(repeat)]
             for name, columns in (("grounding off", {"grounding": False}), ("grounding on", {}))}
    base = statistics.median(whole["grounding off"])
    print("  the whole run (dissectkit run in a fresh interpreter, as a user runs it):")
    for name, ts in whole.items():
        t = statistics.median(ts)
        print(f"    {name:40s} {t:7.2f} s   x{t / base:.3f} of off   (runs: {', '.join(f'{x:.2f}' for x in ts)})")


def _cli(n: int, columns: dict[str, Any], out: Path) -> float:
    """Wall seconds of ``dissectkit run`` of the quickstart (csv) in a fresh interpreter, on the same
    cache as this process, without the plugins installed here (as the README's quickstart installs it)."""
    import os
    import subprocess
    import sys

    import yaml
    from published_compare import quickstart_env

    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(_quickstart(out, n, columns)))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dissectkit", "run", str(path), "--quiet"], check=True,
                   env=quickstart_env(dict(os.environ)), cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _auc(right: list[float], wrong: list[float]) -> float | None:
    if not right or not wrong:
        return None
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def auc(n: int, out: Path) -> None:
    import dissectkit as dk
    from dissectkit.host.recipe import recipe_from_dict
    from dissectkit.synthetic import arch
    from dissectkit.synthetic.plugin import _config_of

    classes = arch.target_classes("synth-effnet-concepts", _config_of(None, None))
    assert classes is not None
    recipe = {
        "name": "grounding_auc",
        "dissector": {"name": "synth-clip"},
        "target": {"name": "synth-effnet-planted", "layers": ["planted"], "pool": "mean"},
        "probe": {"name": "synth-mammo", "params": {"n": n, "seed": 0}},
        "concepts": {"name": "synth-mammo-concepts", "params": {"groups": ["findings"]}},
        "methods": [{"name": m} for m in METHODS],
        "output": {"dir": str(out / "auc"), "reporters": ["csv"]},
        "runtime": {"device": "cpu", "batch_size": 100, "num_workers": 0, "offline": True, "seed": 0},
    }
    t0 = time.perf_counter()
    result = dk.run(recipe_from_dict(recipe))
    elapsed = time.perf_counter() - t0
    truth = [*classes, *([None] * 12)]
    print(f"planted layer of synth-effnet-planted, n={n}, run {elapsed:.1f} s")
    scores = ["grounding_iou", "grounding_above_chance", "pointing", "pointing_above_chance"]
    print("  AUC of each score separating right from wrong top-1 labels; last column: pointing_above_chance, the wrong"
          " labels of planted channels only (the random channels' labels left out)")
    print(f"  {'method':14s} {'right':>5s} {'wrong':>5s} {'no score':>8s} " + " ".join(f"{s:>22s}" for s in scores)
          + f" {'iou right':>9s} {'iou wrong':>9s} {'planted only':>12s}")
    for method in METHODS:
        rows = [r for r in result.rows() if r["method"] == method and r["label"] is not None]
        scored = [r for r in rows if r["grounding_iou"] is not None]
        right = [r for r in scored if r["label"] == truth[r["unit"]]]
        wrong = [r for r in scored if r["label"] != truth[r["unit"]]]
        aucs = [_auc([r[s] for r in right], [r[s] for r in wrong]) for s in scores]
        planted = _auc([r["pointing_above_chance"] for r in right],
                       [r["pointing_above_chance"] for r in wrong if truth[r["unit"]] is not None])

        def mean(rs: list[dict[str, Any]]) -> str:
            return f"{statistics.fmean(r['grounding_iou'] for r in rs):.3f}" if rs else "-"

        def fmt(a: float | None) -> str:
            return "-" if a is None else f"{a:.3f}"

        print(f"  {method:14s} {len(right):5d} {len(wrong):5d} {len(rows) - len(scored):8d} "
              + " ".join(f"{fmt(a):>22s}" for a in aucs)
              + f" {mean(right):>9s} {mean(wrong):>9s} {fmt(planted):>12s}")


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="both", choices=["cost", "auc", "both"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.what in ("auc", "both"):
            auc(args.n, Path(tmp))
        if args.what in ("cost", "both"):
            cost(args.n, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
