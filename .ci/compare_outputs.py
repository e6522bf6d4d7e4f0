"""The quickstart's and the synthetic study's outputs, byte for byte, against a base revision.

Runs ``recipes/quickstart.yaml`` and ``recipes/study_synthetic.yaml`` with the code of a base git
revision (a temporary ``git worktree``, put first on ``PYTHONPATH`` of this environment's Python)
and with the working tree, each side with its own recipe files and its own empty cache, then compares
the ``label_sets`` of ``labels.json``, ``neurons.csv`` and every ``study/*.csv``. Prints a table; exits
1 when anything differs (or is missing on one side). Installed plugins are left out on both sides.

A developer check, not part of CI (several minutes on 2 CPU cores)::

    .venv/bin/python .ci/compare_outputs.py                  # base: 0a97481, main before issue 18
    .venv/bin/python .ci/compare_outputs.py --base main --work /tmp/cmp --keep
    .venv/bin/python .ci/compare_outputs.py --base-outputs /tmp/cmp/base   # reuse a base run's outputs
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "0a97481"
RUNS = {"quickstart": "recipes/quickstart.yaml", "study": "recipes/study_synthetic.yaml"}


def _installed_plugins() -> list[str]:
    """Distributions other than dissectkit with a ``dissectkit`` entry point (left out of both runs)."""
    return sorted({ep.dist.name for ep in metadata.entry_points(group="dissectkit")
                   if ep.dist is not None and ep.dist.name != "dissectkit"})


def _env(src: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    env["DISSECTKIT_CACHE"] = str(cache)
    env["DISSECTKIT_BUILTINS_ONLY"] = "1"  # the working tree's switch; the base knows only the next one
    env["DISSECTKIT_DISABLE_PLUGINS"] = ",".join(_installed_plugins())
    return env


def run_side(label: str, src: Path, out: Path) -> None:
    """Both recipes with the dissectkit of ``src`` into ``out/<run>``."""
    env = _env(src, out / "cache")
    where = subprocess.run([sys.executable, "-c", "import dissectkit; print(dissectkit.__file__)"],
                           env=env, cwd=src, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(src.resolve()):
        sys.exit(f"{label}: dissectkit is imported from {where}, not from {src}")
    for run, recipe in RUNS.items():
        start = time.perf_counter()
        print(f"{label}: {recipe} -> {out / run}", end="", flush=True)
        done = subprocess.run([sys.executable, "-m", "dissectkit", "run", str(src / recipe), "-o", str(out / run), "-q"],
                              env=env, cwd=src, capture_output=True, text=True)
        if done.returncode != 0:
            print()
            sys.exit(f"{label}: `dissectkit run {recipe}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
        print(f" ({time.perf_counter() - start:.0f} s)")


def compare(base: Path, head: Path) -> list[tuple[str, str, str]]:
    """(run, file, result) rows; result is ``identical``, ``DIFFER`` or ``MISSING in base|head``."""
    rows = []
    for run in RUNS:
        a, b = base / run, head / run
        missing = [side for side, d in (("base", a), ("head", b)) if not (d / "labels.json").is_file()]
        if missing:
            rows.append((run, "labels.json", f"MISSING in {', '.join(missing)}"))
        else:
            same = json.loads((a / "labels.json").read_text())["label_sets"] == json.loads((b / "labels.json").read_text())["label_sets"]
            rows.append((run, "labels.json label_sets", "identical" if same else "DIFFER"))
        names = ["neurons.csv"] + sorted({f"study/{p.name}" for d in (a, b) for p in (d / "study").glob("*.csv")})
        for name in names:
            gone = [side for side, d in (("base", a), ("head", b)) if not (d / name).is_file()]
            if gone:
                rows.append((run, name, f"MISSING in {', '.join(gone)}"))
            else:
                rows.append((run, name, "identical" if filecmp.cmp(a / name, b / name, shallow=False) else "DIFFER"))
    return rows


def _worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(where), rev], check=True)
    return where


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=DEFAULT_BASE, help=f"git revision to compare with (default {DEFAULT_BASE})")
    ap.add_argument("--base-outputs", type=Path, help="outputs of an earlier base run (its quickstart/ and study/): not rerun")
    ap.add_argument("--work", type=Path, help="folder for the outputs (default: a temporary one, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="dk-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    tree = None
    try:
        if args.base_outputs:
            base_out = args.base_outputs
        else:
            tree = _worktree(args.base, work / "base-src")
            commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, check=True).stdout.strip()
            base_out = work / "base"
            run_side(f"base {args.base} ({commit})", tree, base_out)
        run_side("working tree", ROOT, work / "head")
        rows = compare(base_out, work / "head")
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    width = max(len(f"{run}  {name}") for run, name, _ in rows)
    print(f"\n{'run  file':<{width}}  result")
    for run, name, result in rows:
        print(f"{f'{run}  {name}':<{width}}  {result}")
    bad = [r for r in rows if r[2] != "identical"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} identical" + (f"; {len(bad)} not" if bad else ""))
    if args.keep or args.work is not None:
        print(f"outputs in {work}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
