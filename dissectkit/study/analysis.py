"""The Mammo-CLIP Dissect analysis of a finished run, as plain tables: thresholds, categories, category
shift and underrepresented concepts (docs/study.md, "The analysis")."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from dissectkit.labelling.measures import global_threshold, meets_threshold, threshold_of_scores

NONE = "(none)"  # a concept without a category (as in dissectkit.labelling.measures)
LEVELS = ("category", "subcategory")


@dataclass
class TargetLayers:
    target: str
    role: str
    layers: list[str]


@dataclass
class Group:
    """One (dissector, method) of the run, with the study tables computed on its neurons."""

    dissector: str
    method: str
    targets: list[TargetLayers] = field(default_factory=list)
    neurons: list[dict[str, Any]] = field(default_factory=list)
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    categories: list[dict[str, Any]] = field(default_factory=list)
    shifts: list[dict[str, Any]] = field(default_factory=list)
    underrepresented: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.dissector}/{self.method}"


def roles(recipe: dict[str, Any]) -> dict[str, str]:
    """Target display name -> role (the role, else the display name itself)."""
    out = {}
    for t in recipe.get("targets") or []:
        display = t.get("label") or t["name"]
        out[display] = t.get("role") or display
    return out


def analyse(result: Any, top_concepts: int = 10, constant_neurons: str = "exclude") -> list[Group]:
    """Every study table of a run, per (dissector, method). ``constant_neurons``: ``exclude`` leaves
    neurons whose activation is constant (``LayerLabels.dead``) out of the layer mean and never counts
    them as interpretable; ``include`` treats a labelled one as any other neuron, as the published
    analysis does (its labels exist with ``precision: published``)."""
    role_of = roles(result.recipe)
    concepts = result.concepts
    rows = list(result.rows(top=top_concepts))
    groups: dict[tuple[str, str], Group] = {}
    dead: set[tuple[str, str, str, str, int]] = set()
    for ls in result.label_sets:
        g = groups.setdefault((ls.dissector, ls.method), Group(ls.dissector, ls.method))
        g.targets.append(TargetLayers(ls.target, role_of.get(ls.target, ls.target), list(ls.layers)))
        dead |= {(ls.dissector, ls.target, ls.method, layer, k) for layer, ll in ls.layers.items() for k in ll.dead}
    for row in rows:
        row["constant"] = (row["dissector"], row["target"], row["method"], row["layer"], row["unit"]) in dead
        row["counted"] = row["label"] is not None and (constant_neurons == "include" or not row["constant"])
        groups[(row["dissector"], row["method"])].neurons.append(row)
    for g in groups.values():
        _thresholds(g)
        _categories(g, concepts)
        _shifts(g, concepts)
        _underrepresented(g, concepts)
    return list(groups.values())


def _thresholds(g: Group) -> None:
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in g.neurons:
        counts[(r["target"], r["layer"])] += 1
        if r["counted"]:
            scores[(r["target"], r["layer"])].append(float(r["score"]))
    local = {key: threshold_of_scores(v) for key, v in scores.items()}
    position: dict[tuple[str, str], int] = {}
    at_position: dict[int, list[float | None]] = defaultdict(list)
    for t in g.targets:
        for i, layer in enumerate(t.layers):
            position[(t.target, layer)] = i
            at_position[i].append(local.get((t.target, layer)))
    global_at = {i: global_threshold(values) for i, values in at_position.items()}
    role_of = {t.target: t.role for t in g.targets}
    for r in g.neurons:
        key = (r["target"], r["layer"])
        i = position[key]
        r["role"] = role_of[r["target"]]
        r["layer_index"] = i
        r["layer_threshold"] = local.get(key)
        r["global_threshold"] = global_at.get(i)
        r["meets_local"] = r["counted"] and meets_threshold(r["score"], r["layer_threshold"])
        r["meets_global"] = r["counted"] and meets_threshold(r["score"], r["global_threshold"])
    by_layer = _by_layer(g)
    for t in g.targets:
        for i, layer in enumerate(t.layers):
            mine = by_layer.get((t.target, layer), [])
            g.thresholds.append({
                "dissector": g.dissector, "method": g.method, "target": t.target, "role": t.role,
                "layer_index": i, "layer": layer, "n_neurons": counts[(t.target, layer)],
                "n_labelled": len(scores.get((t.target, layer), [])),
                "threshold": local.get((t.target, layer)), "global_threshold": global_at.get(i),
                "n_meets_local": sum(r["meets_local"] for r in mine),
                "n_meets_global": sum(r["meets_global"] for r in mine),
            })


def _by_layer(g: Group) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in g.neurons:
        out[(r["target"], r["layer"])].append(r)
    return out


def category_of(concept: Any, level: str) -> str:
    value = getattr(concept, level, None) if concept is not None else None
    return value or NONE


def all_categories(concepts: list[Any], level: str) -> list[str]:
    """The categories of a concept set at ``level``, in first-seen order (``(none)`` last if any)."""
    cats = list(dict.fromkeys(category_of(c, level) for c in concepts))
    return [c for c in cats if c != NONE] + ([NONE] if NONE in cats else [])


def ranked_categories(hits: list[dict[str, Any]], index: dict[str, Any], level: str) -> list[tuple[str, int]]:
    """The categories of a layer's interpretable neurons with their counts, most first; ties in the
    order the published figure gives them: the order in which they first appear among the neurons
    sorted by top-1 score, descending (ties: lower unit) - the published table is sorted that way
    before its categories are counted."""
    ordered = sorted(hits, key=lambda r: (-float(r["score"]), r["unit"]))
    counts = Counter(category_of(index.get(r["label"]), level) for r in ordered)  # insertion = first appearance
    return sorted(counts.items(), key=lambda cv: -cv[1])  # stable: ties keep first appearance


def _categories(g: Group, concepts: list[Any]) -> None:
    index = {c.text: c for c in concepts}
    by_layer = _by_layer(g)
    for level in LEVELS:
        cats = all_categories(concepts, level)
        for t in g.targets:
            for i, layer in enumerate(t.layers):
                hits = [r for r in by_layer.get((t.target, layer), []) if r["meets_global"]]
                ranked = ranked_categories(hits, index, level)
                counts = dict(ranked)
                rank = {c: j + 1 for j, (c, _) in enumerate(ranked)}
                for cat in cats:
                    n = counts.get(cat, 0)
                    g.categories.append({
                        "dissector": g.dissector, "method": g.method, "target": t.target, "role": t.role,
                        "layer_index": i, "layer": layer, "level": level, "category": cat,
                        "interpretable": n, "share": n / len(hits) if hits else 0.0, "rank": rank.get(cat),
                    })


def shift_pairs(targets: list[TargetLayers]) -> list[tuple[TargetLayers, TargetLayers]]:
    """(from, to) pairs of the category shift: G -> M, and M -> each fine-tuned target (role C...)."""
    by_role = {t.role: t for t in targets}
    pairs = []
    if "G" in by_role and "M" in by_role:
        pairs.append((by_role["G"], by_role["M"]))
    if "M" in by_role:
        pairs += [(by_role["M"], t) for t in targets if t.role == "C" or t.role.startswith("C-")]
    return pairs


def target_shares(g: Group, concepts: list[Any], target: str, level: str) -> dict[str, float]:
    """Share of each category among all interpretable neurons of a target (all layers)."""
    index = {c.text: c for c in concepts}
    hits = [r for r in g.neurons if r["target"] == target and r["meets_global"]]
    counts = Counter(category_of(index.get(r["label"]), level) for r in hits)
    return {cat: counts[cat] / len(hits) if hits else 0.0 for cat in all_categories(concepts, level)}


def _shifts(g: Group, concepts: list[Any]) -> None:
    for a, b in shift_pairs(g.targets):
        for level in LEVELS:
            sa, sb = target_shares(g, concepts, a.target, level), target_shares(g, concepts, b.target, level)
            for cat in all_categories(concepts, level):
                g.shifts.append({
                    "dissector": g.dissector, "method": g.method, "level": level, "category": cat,
                    "shift": f"{b.role} minus {a.role}", "from_target": a.target, "to_target": b.target,
                    "share_from": sa[cat], "share_to": sb[cat], "difference": sb[cat] - sa[cat],
                })


def _underrepresented(g: Group, concepts: list[Any]) -> None:
    found = {r["label"] for r in g.neurons if r["meets_global"]}
    for c in concepts:
        if c.text not in found:
            g.underrepresented.append({
                "dissector": g.dissector, "method": g.method, "concept": c.text,
                "category": c.category or "", "subcategory": c.subcategory or "",
            })
