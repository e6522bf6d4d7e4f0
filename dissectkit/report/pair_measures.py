"""Adapters from :mod:`dissectkit.labelling.measures` (the definitions, methods.md) to the comparison report.

``dissectkit.labelling.measures`` raises on a layer without any labelled neuron; a comparison must still
show such a layer, so here its threshold is ``None`` and the global threshold is the other
side's. Only :func:`concept_difference` is computed here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dissectkit.base.errors import EvidenceError
from dissectkit.labelling import measures as dm

NONE = "(none)"


def agreement(a: Any, b: Any) -> dict[str, float]:
    """Top-1 agreement, mean top-5 Jaccard and Cohen's kappa of two ``LayerLabels``."""
    got = dm.agreement(a, b)
    return {"top1_agreement": got.top1, "top5_jaccard": got.top5_jaccard, "kappa": got.kappa}


def layer_threshold(ll: Any) -> float | None:
    """Mean top-1 score over the labelled neurons, ``None`` when no neuron has a concept."""
    try:
        return float(dm.layer_threshold(ll))
    except EvidenceError:
        return None


def _side(counts: dict[str, Any]) -> dict[str, Any]:
    return {"total": {"all": counts["above"]}, "broad": dict(sorted(counts["broad_category"].items())),
            "fine": dict(sorted(counts["category"].items()))}


EMPTY = {"total": {"all": 0}, "broad": {}, "fine": {}}


def global_threshold_counts(a: Any, b: Any, concepts: dict[str, Any]) -> dict[str, Any]:
    """Global threshold (the larger layer threshold) and, per side, neurons above it per broad
    category and per (fine) category."""
    ta, tb = layer_threshold(a), layer_threshold(b)
    items = list(concepts.values())
    if ta is not None and tb is not None:
        got = dm.global_threshold_counts(a, b, items)
        return {"threshold_a": ta, "threshold_b": tb, "global": got["threshold"], "a": _side(got["a"]),
                "b": _side(got["b"])}
    if ta is None and tb is None:
        return {"threshold_a": None, "threshold_b": None, "global": None, "a": dict(EMPTY), "b": dict(EMPTY)}
    only = a if ta is not None else b  # one side has no labelled neuron: the other's threshold is global
    got = dm.global_threshold_counts(only, only, items)
    counts = _side(got["a"])
    return {"threshold_a": ta, "threshold_b": tb, "global": got["threshold"],
            "a": counts if ta is not None else dict(EMPTY), "b": counts if tb is not None else dict(EMPTY)}


def concept_difference(a: Any, b: Any) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Top-1 concepts found by ``a`` and missed by ``b`` and vice versa, with their neuron counts."""
    ca = Counter(c for c in a.top1() if c is not None)
    cb = Counter(c for c in b.top1() if c is not None)
    only_a = sorted(((c, n) for c, n in ca.items() if c not in cb), key=lambda t: (-t[1], t[0]))
    only_b = sorted(((c, n) for c, n in cb.items() if c not in ca), key=lambda t: (-t[1], t[0]))
    return only_a, only_b
