"""Study mode and its presets: what a published analysis passed to each component, filled into a
recipe's params.

In study mode (a ``study:`` section) every ``clip-dissect`` method keeps ``study.top_concepts``
(default 10) concepts per neuron, and the table / html reporters list as many.

``mcd`` (Mammo-CLIP Dissect): every run kept the top 10 concepts per neuron and passed
``top_k=100`` to every similarity function (so its WPMI used 100, not CLIP-Dissect's 28;
soft-WPMI's default is already 100). Similarities without a ``top_k`` parameter (cos, cos3,
rank_reorder) ignore it there, and are left as they are here. A value the recipe sets itself is
kept: a preset only fills what the recipe leaves out.
"""

from __future__ import annotations

from typing import Any

TOP_K_SIMILARITIES = ("wpmi", "soft_wpmi")
TABLE_REPORTERS = ("csv", "json", "parquet")
DEFAULT_SIMILARITY = "soft_wpmi"  # the clip-dissect method's default

PRESETS: dict[str, dict[str, Any]] = {
    "mcd": {"similarity_params": {"top_k": 100}},
}


def apply_study(preset: str | None, top: int, methods: list[Any], reporters: list[Any]) -> None:
    """Fill study mode's ``top`` concepts per neuron and the preset's values (if any) into
    ``clip-dissect`` methods and table / html reporters (in place; values already set are kept)."""
    for ref in methods:
        if ref.name != "clip-dissect":
            continue
        ref.params.setdefault("top_m", top)
        if preset and ref.params.get("similarity", DEFAULT_SIMILARITY) in TOP_K_SIMILARITIES:
            preset_values = PRESETS[preset]
            sim = ref.params.setdefault("similarity_params", {})
            for key, value in preset_values["similarity_params"].items():
                sim.setdefault(key, value)
    for ref in reporters:
        if ref.name in TABLE_REPORTERS:
            ref.params.setdefault("top", top)
        elif ref.name == "html":
            ref.params.setdefault("top_concepts", top)
