"""The per-neuron column groups (:mod:`dissectkit.labelling.columns`), in table order, and computing them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from dissectkit.base.errors import RecipeError, did_you_mean
from dissectkit.base.params import format_validation_error
from dissectkit.labelling.columns import Column, ColumnGroup, LabelContext
from dissectkit.labelling.grounding import GROUNDING
from dissectkit.labelling.margins import MARGINS
from dissectkit.labelling.quality import QUALITY
from dissectkit.labelling.stability import STABILITY


def groups() -> list[ColumnGroup]:
    """The column groups, in table order."""
    return [QUALITY, MARGINS, STABILITY, GROUNDING]


def all_columns() -> list[Column]:
    """Every column of every group, in table order."""
    return [c for g in groups() for c in g.columns]


def settings(raw: dict[str, bool | dict[str, Any]] | None = None) -> dict[str, BaseModel | None]:
    """Each group's validated params (``None``: turned off) from a recipe's ``output.columns``;
    an unknown group or a bad param is a ``RecipeError`` naming it."""
    raw = dict(raw or {})
    known = {g.name: g for g in groups()}
    unknown = [name for name in raw if name not in known]
    if unknown:
        raise RecipeError(f"output.columns: unknown column group {unknown[0]!r}.{did_you_mean(unknown[0], known)} "
                          f"Groups: {', '.join(known)}.")
    out: dict[str, BaseModel | None] = {}
    for name, group in known.items():
        value = raw.get(name, True)
        if value is False:
            out[name] = None
            continue
        try:
            out[name] = group.params.model_validate({} if value is True else value)
        except ValidationError as exc:
            raise RecipeError(format_validation_error(exc, f"output.columns.{name}")) from None
    return out


def compute_columns(ctx: LabelContext, chosen: dict[str, BaseModel | None] | None = None) -> dict[str, list[Any]]:
    """Every group's columns for one labelled layer, with the params ``chosen`` gives (default: every
    group with its defaults); a group turned off gives no column."""
    chosen = settings() if chosen is None else chosen
    out: dict[str, list[Any]] = {}
    for group in groups():
        params = chosen.get(group.name)
        if params is None:
            continue
        values = group.compute(ctx, params)
        for column in group.columns:
            out[column.name] = list(values.get(column.name, [None] * ctx.n_neurons))
    return out
