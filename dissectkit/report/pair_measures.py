"""Adapters from :mod:`dissectkit.labelling.measures` (the definitions, methods.md) to the comparison report.

Only :func:`concept_difference` is computed here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dissectkit.labelling import measures as dm

NONE = "(none)"


def agreement(a: Any, b: Any) -> dict[str, float]:
    """Top-1 agreement, mean top-5 Jaccard and Cohen's kappa of two ``LayerLabels``."""
    got = dm.agreement(a, b)
    return {"top1_agreement": got.top1, "top5_jaccard": got.top5_jaccard, "kappa": got.kappa}


def _side(counts: dict[str, Any]) -> dict[str, Any]:
    return {"total": {"all": counts["above"]}, "broad": dict(sorted(counts["broad_category"].items())),
            "fine": dict(sorted(counts["category"].items()))}


def global_threshold_counts(a: Any, b: Any, concepts: dict[str, Any]) -> dict[str, Any]:
    """Layer thresholds (``None`` for a side without labelled neurons), the global threshold and,
    per side, neurons above it per broad category and per (fine) category."""
    got = dm.global_threshold_counts(a, b, list(concepts.values()))
    return {"threshold_a": dm.layer_threshold(a), "threshold_b": dm.layer_threshold(b), "global": got["threshold"],
            "a": _side(got["a"]), "b": _side(got["b"])}


def concept_difference(a: Any, b: Any) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Top-1 concepts found by ``a`` and missed by ``b`` and vice versa, with their neuron counts."""
    ca = Counter(c for c in a.top1() if c is not None)
    cb = Counter(c for c in b.top1() if c is not None)
    only_a = sorted(((c, n) for c, n in ca.items() if c not in cb), key=lambda t: (-t[1], t[0]))
    only_b = sorted(((c, n) for c, n in cb.items() if c not in ca), key=lambda t: (-t[1], t[0]))
    return only_a, only_b
