"""The per-neuron column groups (:mod:`dissectkit.labelling.columns`), in table order, and computing them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dissectkit.labelling.columns import Column, ColumnGroup, LabelContext
from dissectkit.labelling.quality import QUALITY


def groups() -> list[ColumnGroup]:
    """The column groups, in table order."""
    return [QUALITY]


def all_columns() -> list[Column]:
    """Every column of every group, in table order."""
    return [c for g in groups() for c in g.columns]


def compute_columns(ctx: LabelContext, chosen: Callable[[ColumnGroup], bool] | None = None) -> dict[str, list[Any]]:
    """Every group's columns for one labelled layer (the groups ``chosen`` accepts; default all)."""
    out: dict[str, list[Any]] = {}
    for group in groups():
        if chosen is not None and not chosen(group):
            continue
        values = group.compute(ctx)
        for column in group.columns:
            out[column.name] = list(values.get(column.name, [None] * ctx.n_neurons))
    return out
