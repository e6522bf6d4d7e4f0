"""What a label's score means, per method (and similarity): shown above each label set's tables
in the HTML report, since a score is on its method's own scale (docs/reports.md, "Scores")."""

from __future__ import annotations

from typing import Any

SCORES = {
    "soft_wpmi": "soft-WPMI: CLIP-Dissect's weighted pointwise mutual information of the concept and the "
                 "neuron's top images (log scale, typically 0 to 4; higher = better)",
    "wpmi": "WPMI: weighted pointwise mutual information of the concept and the neuron's top images "
            "(log scale; higher = better)",
    "cos": "cosine of the neuron's activations and the concept's image similarities over the probe (-1 to 1)",
    "cos3": "cosine of the centred, cubed activations and concept similarities (-1 to 1)",
    "rank_reorder": "negated rank-order disagreement of the neuron's top images (at most 0; nearer 0 = better)",
    "mammi": "MAMMI: over the neuron's representative images, the sum of cos(image, concept) - cos(image, "
             "template) (grows with the number of representative images, e.g. 0 to 10)",
    "netdissect": "IoU of the neuron's top-quantile activation region with the concept's masks (0 to 1)",
}


def score_note(label_set: Any) -> str:
    """One sentence on the scores of a label set (its method, and its similarity for CLIP-Dissect)."""
    layer = next(iter(label_set.layers.values()), None)
    method = getattr(layer, "method", "") or ""
    params = getattr(layer, "params", {}) or {}
    key = params.get("similarity") if isinstance(params.get("similarity"), str) else method
    meaning = SCORES.get(str(key), "the method's own score (higher = better)")
    return (f"Scores: {meaning}. Scores of different methods or similarities are on different scales: "
            "compare them within one label set.")
