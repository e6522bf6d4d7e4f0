"""The study's CSV files under ``<run>/study/`` (one row per record, every group of the run)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dissectkit.study.analysis import Group

THRESHOLDS = ("dissector", "method", "target", "role", "layer_index", "layer", "n_neurons", "n_labelled",
              "threshold", "global_threshold", "n_meets_local", "n_meets_global")
CATEGORIES = ("dissector", "method", "target", "role", "layer_index", "layer", "level", "category",
              "interpretable", "share", "rank")
SHIFTS = ("dissector", "method", "level", "category", "shift", "from_target", "to_target", "share_from",
          "share_to", "difference")
UNDER = ("dissector", "method", "concept", "category", "subcategory")
NEURONS = ("dissector", "method", "target", "role", "layer_index", "layer", "unit", "label", "score",
           "category", "subcategory", "layer_threshold", "global_threshold", "meets_local", "meets_global", "constant",
           "sim_corr", "top_auc", "sim_z", "label_supported", "stability", "score_lo", "score_hi", "top_concepts",
           "top_scores", "interpretable")  # interpretable: label_supported's deprecated alias (removed in 0.3)
SEP = "|"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)  # full precision: the files are checked against a direct computation
    if isinstance(value, list):
        return SEP.join(_cell(v) if not isinstance(v, str) else v for v in value)
    return value


def write_csv(path: Path, columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
    return path


def write_tables(groups: list[Group], folder: Path) -> dict[str, Path]:
    """``thresholds.csv``, ``categories.csv``, ``category_shift.csv``, ``underrepresented.csv`` and
    ``neurons.csv`` (every neuron with its thresholds and the study's top concepts)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "thresholds": write_csv(folder / "thresholds.csv", THRESHOLDS, (r for g in groups for r in g.thresholds)),
        "categories": write_csv(folder / "categories.csv", CATEGORIES, (r for g in groups for r in g.categories)),
        "category_shift": write_csv(folder / "category_shift.csv", SHIFTS, (r for g in groups for r in g.shifts)),
        "underrepresented": write_csv(folder / "underrepresented.csv", UNDER,
                                      (r for g in groups for r in g.underrepresented)),
        "neurons": write_csv(folder / "neurons.csv", NEURONS, (r for g in groups for r in g.neurons)),
    }
