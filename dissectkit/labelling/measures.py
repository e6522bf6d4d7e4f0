"""Measures of labels (docs/methods.md): final-layer accuracy, MAMMI list measures, layer thresholds,
global-threshold counts and the agreement of two runs. Pure functions of ``LayerLabels``."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dissectkit.base.errors import EvidenceError
from dissectkit.labelling.evidence import LayerLabels, concept_list

__all__ = [
    "Estimate",
    "final_layer_accuracy",
    "list_measures",
    "layer_threshold",
    "threshold_of_scores",
    "global_threshold",
    "global_threshold_counts",
    "meets_threshold",
    "agreement",
]


@dataclass(frozen=True)
class Estimate:
    """A mean over neurons with its standard error (``se = sd / sqrt(n)``, sample ``sd``; 0 when n < 2)."""

    value: float
    se: float
    n: int


def _estimate(xs: Sequence[float]) -> Estimate:
    n = len(xs)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n < 2:
        return Estimate(mean, 0.0, n)
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return Estimate(mean, math.sqrt(var / n), n)


def _check_len(labels: LayerLabels, other: Sequence[Any], what: str) -> None:
    if len(other) != len(labels.neurons):
        raise EvidenceError(
            f"Layer {labels.layer!r} has {len(labels.neurons)} labelled neurons but {len(other)} {what}; "
            "they must be given per neuron, in order."
        )


def final_layer_accuracy(
    labels: LayerLabels,
    truth: Sequence[str | None],
    text_encoder: Callable[[list[str]], Any] | None = None,
) -> dict[str, float | int | None]:
    """CLIP-Dissect's final-layer protocol (``top1``, ``top5``, ``cos``, ``n``) over neurons whose true
    concept is known (docs/methods.md, "Measures")."""
    _check_len(labels, truth, "ground-truth entries")
    known = [(k, t) for k, t in enumerate(truth) if t is not None]
    out: dict[str, float | int | None] = {"n": len(known), "top1": None, "top5": None, "cos": None}
    if not known:
        return out
    out["top1"] = sum(labels.label(k) == t for k, t in known) / len(known)
    out["top5"] = sum(t in labels.topk(5)[k] for k, t in known) / len(known)
    if text_encoder is not None:
        import torch

        pred = [labels.label(k) for k, _ in known]
        have = [i for i, p in enumerate(pred) if p is not None]
        sims = [0.0] * len(known)
        if have:
            e_pred = torch.as_tensor(text_encoder([str(pred[i]) for i in have])).double()
            e_true = torch.as_tensor(text_encoder([known[i][1] for i in have])).double()
            cos = torch.nn.functional.cosine_similarity(e_pred, e_true, dim=1)
            for i, c in zip(have, cos.tolist(), strict=True):
                sims[i] = c
        out["cos"] = sum(sims) / len(sims)
    return out


def list_measures(labels: LayerLabels, truth_sets: Sequence[set[str] | None]) -> dict[str, Estimate]:
    """MAMMI's list measures over neurons with a non-empty truth set ``T_k``; ``P_k`` = all predicted
    concepts of neuron k. Per neuron: hit = [P∩T ≠ ∅]; precision = |P∩T|/|P| (0 if P empty);
    recall = |P∩T|/|T|; F1 = 2PR/(P+R) (0 if both 0). Each measure is the mean over neurons with
    its standard error."""
    _check_len(labels, truth_sets, "truth sets")
    hit, prec, rec, f1 = [], [], [], []
    for ranked, truth in zip(labels.neurons, truth_sets, strict=True):
        if not truth:
            continue
        pred = {c for c, _ in ranked}
        inter = len(pred & set(truth))
        p = inter / len(pred) if pred else 0.0
        r = inter / len(truth)
        hit.append(1.0 if inter else 0.0)
        prec.append(p)
        rec.append(r)
        f1.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    return {
        "hit_rate": _estimate(hit),
        "precision": _estimate(prec),
        "recall": _estimate(rec),
        "f1": _estimate(f1),
    }


def threshold_of_scores(top1_scores: Sequence[float]) -> float | None:
    """Mammo-CLIP Dissect's layer similarity threshold from the top-1 scores of a layer's labelled
    neurons: their mean; ``None`` when there is none."""
    return sum(top1_scores) / len(top1_scores) if top1_scores else None


def layer_threshold(labels: LayerLabels) -> float | None:
    """The layer similarity threshold: the mean top-1 score over labelled neurons, ``None`` when no
    neuron has a label (:func:`threshold_of_scores`)."""
    return threshold_of_scores([float(ranked[0][1]) for ranked in labels.neurons if ranked])


def global_threshold(thresholds: Iterable[float | None]) -> float | None:
    """The threshold shared by layers compared across runs: the largest layer threshold defined,
    ``None`` when none is."""
    return max((t for t in thresholds if t is not None), default=None)


def meets_threshold(score: float | None, threshold: float | None) -> bool:
    """Mammo-CLIP Dissect's test: a neuron counts as interpretable when its top-1 score is ``>=``
    the threshold (the published analysis; ties count)."""
    return score is not None and threshold is not None and score >= threshold


def global_threshold_counts(a: LayerLabels, b: LayerLabels, concepts: Any) -> dict[str, Any]:
    """Counts, for two runs on the same layer, of neurons whose top-1 score meets (``>=``) the global
    threshold (:func:`global_threshold` of the two layer thresholds), per concept category
    (``subcategory``) and broad category (``category``); concepts without one count under ``"(none)"``."""
    threshold = global_threshold([layer_threshold(a), layer_threshold(b)])
    info = {c.text: c for c in concept_list(concepts)}
    out: dict[str, Any] = {"threshold": threshold}
    for key, run in (("a", a), ("b", b)):
        by_cat: Counter[str] = Counter()
        by_broad: Counter[str] = Counter()
        total = 0
        for ranked in run.neurons:
            if not ranked or not meets_threshold(ranked[0][1], threshold):
                continue
            total += 1
            c = info.get(ranked[0][0])
            by_cat[(c.subcategory if c else None) or "(none)"] += 1
            by_broad[(c.category if c else None) or "(none)"] += 1
        out[key] = {"above": total, "category": dict(by_cat), "broad_category": dict(by_broad)}
    return out


@dataclass(frozen=True)
class Agreement:
    top1: float
    top5_jaccard: float
    kappa: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def agreement(a: LayerLabels, b: LayerLabels) -> Agreement:
    """Agreement of two labellings of the same neurons: top-1 agreement rate, mean Jaccard of the
    top-5 sets (two empty sets: 1), and Cohen's kappa of the top-1 labels (``None`` = its own class;
    kappa = 1 when both runs give every neuron one same label)."""
    if len(a.neurons) != len(b.neurons):
        raise EvidenceError(
            f"Cannot compare runs: layer {a.layer!r} has {len(a.neurons)} neurons in one and "
            f"{len(b.neurons)} in the other."
        )
    n = len(a.neurons)
    if n == 0:
        return Agreement(math.nan, math.nan, math.nan, 0)
    la, lb = a.top1(), b.top1()
    po = sum(x == y for x, y in zip(la, lb, strict=True)) / n
    jac = []
    for sa, sb in zip(a.topk(5), b.topk(5), strict=True):
        u = set(sa) | set(sb)
        jac.append(len(set(sa) & set(sb)) / len(u) if u else 1.0)
    ca, cb = Counter(la), Counter(lb)
    pe = sum(ca[c] * cb.get(c, 0) for c in ca) / (n * n)
    kappa = (po - pe) / (1 - pe) if pe < 1 else (1.0 if po == 1 else 0.0)
    return Agreement(po, sum(jac) / n, kappa, n)
