"""Label margins (column group ``margins``; docs/methods.md, "Margins and near ties").

For a labelled neuron with ranked scores ``s_1 >= s_2 >= ...`` (over every concept the method
scored): ``margin = s_1 - s_2``, and ``near_tie`` when the margin is at or below the tolerance of the
method's arithmetic (``LayerLabels.tolerance``: how far two correct float32 evaluations of one score
may lie apart), i.e. which of the two concepts is the label is decided by rounding, not by the
evidence. ``s_2`` is the second entry of the neuron's ranked list, or ``LayerLabels.runner_up[k]`` when
the method keeps only one concept (a MAMMI list of one, ``top_m: 1``). A method that reports no
tolerance gets ``FALLBACK_FACTOR`` float32 roundings of the larger score. Neither value is computed for
a neuron without a label or without a second score.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dissectkit.base.params import Params
from dissectkit.labelling.columns import Column, LabelContext
from dissectkit.labelling.evidence import LayerLabels

__all__ = ["MARGINS", "MarginParams", "margins"]

UNIT_ROUNDOFF = 2.0**-24
FALLBACK_FACTOR = 4.0


class MarginParams(Params):
    tolerance: float | None = Field(
        None, ge=0, description="near-tie tolerance for every label set (None: the method's own, LayerLabels.tolerance)")


def margins(labels: LayerLabels, tolerance: float | None = None) -> dict[str, list[Any]]:
    """``{"margin": [...], "near_tie": [...]}`` of one labelled layer (``None`` where undefined)."""
    tol = labels.tolerance if tolerance is None else tolerance
    margin: list[float | None] = []
    near: list[bool | None] = []
    for k, ranked in enumerate(labels.neurons):
        second = ranked[1][1] if len(ranked) > 1 else labels.runner_up.get(k) if ranked else None
        if second is None:
            margin.append(None)
            near.append(None)
            continue
        first = float(ranked[0][1])
        m = first - float(second)
        limit = tol if tol is not None else FALLBACK_FACTOR * UNIT_ROUNDOFF * max(abs(first), abs(float(second)))
        margin.append(m)
        near.append(bool(m <= limit))
    return {"margin": margin, "near_tie": near}


class _Margins:
    name = "margins"
    columns = (
        Column("margin", "top-1 minus top-2 score of the neuron's ranking (the label's lead over the next concept)"),
        Column("near_tie", "the margin is at or below the rounding tolerance of the method's arithmetic: the "
               "label is a coin toss between the top two concepts", kind="bool", better="lower"),
    )
    params = MarginParams

    def compute(self, ctx: LabelContext, params: MarginParams) -> dict[str, list[Any]]:
        return margins(ctx.labels, params.tolerance)


MARGINS = _Margins()
