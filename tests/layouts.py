"""Small fixtures of every built-in probe in the real layouts, built with runtime dependencies only
(used by tests/test_probes.py and by tests/smoke_layouts.py in CI's fresh no-extras venv)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from dissectkit.synthetic.export import LAYOUTS, export_world, read_truth


def build_layouts(root: Path, n: int = 12) -> dict[str, dict[str, Any]]:
    """``{fixture name: probe spec}``: the six exported layouts, a CSV manifest (with a repeated id in
    its id column) over the image-folder export, and the in-memory ``synth-mammo`` probe."""
    root = Path(root)
    specs = {layout: export_world(layout, n, root / layout).probe for layout in LAYOUTS}
    images = Path(specs["image-folder"]["params"]["root"])
    rows = read_truth(images.parent)
    manifest = root / "csv" / "manifest.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["path", "case", "malignancy", "mass"])
        for k, r in enumerate(rows):
            wr.writerow([str(images / r["id"]), f"case-{k // 2}", r["malignancy"], r["oval mass"]])
    # absolute paths in the CSV: the folder they lie in is named as images_root (else they are refused)
    specs["csv"] = {"name": "csv", "params": {"root": str(manifest), "id_column": "case", "images_root": str(images)}}
    specs["synth-mammo"] = {"name": "synth-mammo", "params": {"n": n, "seed": 0}}
    return specs
