"""Tidy per-neuron tables (CSV, JSON, Parquet) from a :class:`~dissectkit.results.run_result.RunResult`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

LABEL_COLUMNS = (
    "dissector", "target", "method", "layer", "unit", "label", "score",
    "no_concept",  # why a neuron has no label: a dissectkit.labelling.evidence.NO_CONCEPT_REASONS code ("dead", ...)
    "category", "subcategory",
    "label_group",  # the label's synonym group when the concept set has groups (docs/methods.md, "Concept groups")
    "n_concepts", "top_concepts", "top_scores",
    "top_images",  # probe ids of the top-activating valid images (dissectkit.results.evidence)
)
"""The columns of every table before the per-neuron columns (label quality, ...: ``neuron_columns``)."""
SEP = "|"
ARROW_TYPES = {"float": "float64", "bool": "bool_", "int": "int64", "str": "string"}


def neuron_columns() -> list[Any]:
    """The per-neuron columns after ``LABEL_COLUMNS`` (:mod:`dissectkit.labelling.columns`), in order."""
    from dissectkit.labelling.column_groups import all_columns

    return all_columns()


def columns() -> list[str]:
    """Every column of the tables, in order."""
    return [*LABEL_COLUMNS, *(c.name for c in neuron_columns())]


def neuron_rows(run_result: Any, top: int = 5, top_images: int = 5) -> list[dict[str, Any]]:
    """One row per (label set, layer, neuron), ordered as in the run (deterministic).

    ``top_images``: the probe ids of the neuron's most activating valid images, best first
    (at most ``top_images``; empty for a neuron whose activation is constant).
    """
    out = []
    for row in run_result.rows(top=top):
        ids = run_result.top_image_ids(row["target"], row["layer"], row["unit"])[:top_images]
        out.append({k: (ids if k == "top_images" else row[k]) for k in columns()})
    return out


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["top_concepts"] = SEP.join(row["top_concepts"])
    out["top_scores"] = SEP.join(f"{s:.6g}" for s in row["top_scores"])
    out["top_images"] = SEP.join(row["top_images"])
    out["score"] = "" if row["score"] is None else f"{row['score']:.6g}"
    for key in ("label", "category", "subcategory", "label_group"):
        out[key] = "" if row[key] is None else row[key]
    for column in neuron_columns():
        value = row[column.name]
        if value is None:
            out[column.name] = ""
        elif column.kind == "float":
            out[column.name] = f"{value:.6g}"
        elif column.kind == "bool":
            out[column.name] = int(value)
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """CSV, one neuron a line; ``top_concepts`` / ``top_scores`` / ``top_images`` joined with ``|``; no concept = empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns(), lineterminator="\n")
        writer.writeheader()
        writer.writerows(_flat(r) for r in rows)
    return path


def write_json(rows: list[dict[str, Any]], path: Path) -> Path:
    """The same rows as a JSON list (lists kept as lists, ``null`` for no concept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    """One tidy Parquet table (pyarrow) with list columns for the top concepts and scores."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("dissector", pa.string()), ("target", pa.string()), ("method", pa.string()),
        ("layer", pa.string()), ("unit", pa.int32()), ("label", pa.string()), ("score", pa.float64()),
        ("no_concept", pa.string()),
        ("category", pa.string()), ("subcategory", pa.string()), ("label_group", pa.string()), ("n_concepts", pa.int32()),
        ("top_concepts", pa.list_(pa.string())), ("top_scores", pa.list_(pa.float64())),
        ("top_images", pa.list_(pa.string())),
        *((c.name, getattr(pa, ARROW_TYPES[c.kind])()) for c in neuron_columns()),
    ])
    table = pa.Table.from_pydict({name: [r[name] for r in rows] for name in columns()}, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
