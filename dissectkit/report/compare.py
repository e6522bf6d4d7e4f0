"""Side-by-side comparison of label sets: from several finished runs, or within one run.

Layers are matched by (target, layer name); when two label sets share no such pair (e.g. two
targets of the same architecture) they are matched by layer name and neuron count.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DataError
from dissectkit.labelling.grounding import COLUMNS as GROUNDING_COLUMNS
from dissectkit.report import pair_measures as M


@dataclass
class Side:
    """One label set of one run, with a display name unique within the comparison."""

    name: str
    run: Any
    ls: Any


@dataclass
class LayerComparison:
    layer_a: str
    layer_b: str
    n: int
    top1_agreement: float
    top5_jaccard: float
    kappa: float
    threshold_a: float | None
    threshold_b: float | None
    global_threshold: float | None
    above_a: dict[str, dict[str, int]]
    above_b: dict[str, dict[str, int]]
    only_a: list[tuple[str, int]]
    only_b: list[tuple[str, int]]
    rows: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.layer_a if self.layer_a == self.layer_b else f"{self.layer_a} ~ {self.layer_b}"


@dataclass
class PairComparison:
    a: Side
    b: Side
    matched_by: str
    layers: list[LayerComparison] = field(default_factory=list)
    unmatched_a: list[str] = field(default_factory=list)
    unmatched_b: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    only_a: list[tuple[str, int]] = field(default_factory=list)
    only_b: list[tuple[str, int]] = field(default_factory=list)


def sides(runs: list[Any]) -> list[Side]:
    """Every label set of every run, named ``run`` (one label set) or ``run:dissector/target/method``."""
    names = [r.name for r in runs]
    out = []
    for i, run in enumerate(runs):
        label = run.name
        if names.count(run.name) > 1:  # same run name: the directory names, else a number
            dirs = [Path(r.out_dir).name for r in runs]
            label = dirs[i] if dirs.count(dirs[i]) == 1 else f"{run.name}#{i + 1}"
        for ls in run.label_sets:
            many = len(run.label_sets) > 1
            name = ls.key if len(runs) == 1 else (f"{label}:{ls.key}" if many else label)
            out.append(Side(name, run, ls))
    return out


def pairs(runs: list[Any]) -> list[tuple[Side, Side]]:
    """One run: every pair of its label sets. Several runs: every pair across different runs."""
    all_sides = sides(runs)
    if len(runs) == 1:
        found = list(combinations(all_sides, 2))
        where = f"run {runs[0].out_dir}"
    else:
        found = [(x, y) for x, y in combinations(all_sides, 2) if x.run is not y.run]
        where = "the given runs"
    if not found:
        raise DataError(
            f"Nothing to compare in {where}: it holds {len(all_sides)} label set(s). Give two or more run "
            "directories, or one run whose recipe lists several dissectors, targets or methods."
        )
    return found


def _rows(a: Any, b: Any) -> list[dict[str, Any]]:
    rows = []
    for unit, (ra, rb) in enumerate(zip(a.neurons, b.neurons, strict=True)):
        la, sa = (ra[0][0], float(ra[0][1])) if ra else (None, None)
        lb, sb = (rb[0][0], float(rb[0][1])) if rb else (None, None)
        rows.append({"unit": unit, "label_a": la, "score_a": sa, "label_b": lb, "score_b": sb, "same": la == lb})
    return rows


def compare_pair(a: Side, b: Side, concepts: dict[str, Any]) -> PairComparison:
    """All measures between the matched layers of two label sets."""
    la, lb = a.ls.layers, b.ls.layers
    matches = [(name, name) for name in la if name in lb]
    matched_by = "target+layer" if a.ls.target == b.ls.target else "layer"
    pair = PairComparison(a, b, matched_by)
    pair.unmatched_a = [n for n in la if n not in {x for x, _ in matches}]
    pair.unmatched_b = [n for n in lb if n not in {y for _, y in matches}]
    all_a, all_b = set(), set()
    for name_a, name_b in matches:
        ll_a, ll_b = la[name_a], lb[name_b]
        if len(ll_a.neurons) != len(ll_b.neurons):
            pair.skipped.append(f"{name_a}: {len(ll_a.neurons)} vs {len(ll_b.neurons)} neurons")
            continue
        agree = M.agreement(ll_a, ll_b)
        glob = M.global_threshold_counts(ll_a, ll_b, concepts)
        only_a, only_b = M.concept_difference(ll_a, ll_b)
        all_a |= {c for c in ll_a.top1() if c}
        all_b |= {c for c in ll_b.top1() if c}
        pair.layers.append(LayerComparison(
            name_a, name_b, len(ll_a.neurons), agree["top1_agreement"], agree["top5_jaccard"], agree["kappa"],
            glob["threshold_a"], glob["threshold_b"], glob["global"], glob["a"], glob["b"], only_a, only_b,
            _rows(ll_a, ll_b),
        ))
    pair.only_a = [(c, sum(n for lc in pair.layers for x, n in lc.only_a if x == c)) for c in sorted(all_a - all_b)]
    pair.only_b = [(c, sum(n for lc in pair.layers for x, n in lc.only_b if x == c)) for c in sorted(all_b - all_a)]
    return pair


def compare_runs(runs: list[Any]) -> list[PairComparison]:
    """Compare every pair (see :func:`pairs`); concepts (with categories) are merged over the runs."""
    concepts: dict[str, Any] = {}
    for run in runs:
        for c in run.concepts:
            concepts.setdefault(c.text, c)
    return [compare_pair(a, b, concepts) for a, b in pairs(runs)]


RANK_BY = ("sim_corr", "sim_z")
"""The columns label sets are ranked by, in order (the first is required to rank)."""
STABILITY = "stability"
GROUNDING_MEANS = tuple(c for c in GROUNDING_COLUMNS if c != "grounding_note")
"""The grounding columns whose means per label set and layer say where its labels land (probes with masks)."""
"""The column of the second ranking, ``rank_stability`` (mean label stability; none without it)."""


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _mean_name(column: Any) -> str:
    """A bool column's mean is the share of neurons for which it holds."""
    return f"{column.name}_share" if column.kind == "bool" else column.name


def ranked_columns() -> list[Any]:
    """The per-neuron columns with a direction (``better``): their means are compared."""
    from dissectkit.labelling.column_groups import all_columns

    return [c for c in all_columns() if c.better is not None]


def quality_ranking(runs: list[Any]) -> list[dict[str, Any]]:
    """Every label set ranked per (target, layer) by the means of its neurons' columns
    (:mod:`dissectkit.labelling.columns`): mean simulation correlation first, then mean z-score;
    label sets without them (runs made before they existed) rank last; ``rank_stability`` ranks them
    by mean label stability (``None`` without it). One row per label set and layer, with the mean of
    every column that has a direction (a bool's share of neurons)."""
    by_layer: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for side in sides(runs):
        for layer, ll in side.ls.layers.items():
            values = side.ls.columns.get(layer, {})
            scored = [v for v in values.get(RANK_BY[0], []) if v is not None]
            by_layer.setdefault((side.ls.target, layer), []).append({
                "target": side.ls.target, "layer": layer, "label_set": side.name, "dissector": side.ls.dissector,
                "method": side.ls.method, "n_neurons": len(ll.neurons), "n_scored": len(scored),
                **{_mean_name(c): _mean(values.get(c.name, [])) for c in ranked_columns()},
            })
    rows = []
    for entries in by_layer.values():
        by_stability = sorted(entries, key=lambda r: (r.get(STABILITY) is None, -(r.get(STABILITY) or 0.0), r["label_set"]))
        stable_rank = {id(r): i for i, r in enumerate(by_stability, 1) if r.get(STABILITY) is not None}
        entries.sort(key=lambda r: (r[RANK_BY[0]] is None, *(-(r[c] or 0.0) for c in RANK_BY), r["label_set"]))
        for rank, r in enumerate(entries, 1):
            rows.append({"rank": rank, "rank_stability": stable_rank.get(id(r)), **r})
    return rows


def write_quality_ranking(rows: list[dict[str, Any]], out: Path) -> Path:
    """``comparison_quality.csv``: :func:`quality_ranking`'s rows."""
    path = out / "comparison_quality.csv"
    cols = ["target", "layer", "rank", "rank_stability", "label_set", "dissector", "method", "n_neurons", "n_scored",
            *(_mean_name(c) for c in ranked_columns())]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([_num(r[c]) if isinstance(r[c], float) or r[c] is None else r[c] for c in cols])
    return path


def _num(x: float | None) -> str:
    return "" if x is None or x != x else f"{x:.6g}"


def write_tables(result: list[PairComparison], out: Path) -> dict[str, Path]:
    """``comparison.csv`` (one row per pair and layer), ``comparison_neurons.csv`` (labels side by
    side) and ``comparison_categories.csv`` (neurons above the global threshold per category)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"layers": out / "comparison.csv", "neurons": out / "comparison_neurons.csv",
             "categories": out / "comparison_categories.csv"}
    with paths["layers"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["a", "b", "layer_a", "layer_b", "matched_by", "n_neurons", "top1_agreement", "top5_jaccard",
                    "kappa", "threshold_a", "threshold_b", "global_threshold", "above_a", "above_b",
                    "only_a", "only_b"])
        for p in result:
            for lc in p.layers:
                w.writerow([p.a.name, p.b.name, lc.layer_a, lc.layer_b, p.matched_by, lc.n, _num(lc.top1_agreement),
                            _num(lc.top5_jaccard), _num(lc.kappa), _num(lc.threshold_a), _num(lc.threshold_b),
                            _num(lc.global_threshold), lc.above_a["total"]["all"], lc.above_b["total"]["all"],
                            "|".join(c for c, _ in lc.only_a), "|".join(c for c, _ in lc.only_b)])
    with paths["neurons"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["a", "b", "layer", "unit", "label_a", "score_a", "label_b", "score_b", "same"])
        for p in result:
            for lc in p.layers:
                for r in lc.rows:
                    w.writerow([p.a.name, p.b.name, lc.name, r["unit"], r["label_a"] or "", _num(r["score_a"]),
                                r["label_b"] or "", _num(r["score_b"]), int(r["same"])])
    with paths["categories"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["a", "b", "layer", "level", "category", "above_a", "above_b"])
        for p in result:
            for lc in p.layers:
                for level in ("broad", "fine"):
                    for cat in sorted(set(lc.above_a[level]) | set(lc.above_b[level])):
                        w.writerow([p.a.name, p.b.name, lc.name, level, cat,
                                    lc.above_a[level].get(cat, 0), lc.above_b[level].get(cat, 0)])
    return paths


def write_html(result: list[PairComparison], out: Path, runs: list[Any], ranking: list[dict[str, Any]] | None = None) -> Path:
    """``compare.html`` with overview, the label sets' quality per layer (:func:`quality_ranking`, with
    where their labels land when the probe has masks), per-pair plots, category counts and labels side
    by side."""
    from dissectkit.report import plots
    from dissectkit.report.render import render

    folder = out / "compare_files" / "plots"
    figs = []
    for i, p in enumerate(result):
        layers = [lc.name for lc in p.layers]
        f: dict[str, Any] = {}
        if layers:
            f["agreement"] = plots.grouped_bars_plot(
                {"top-1 agreement": {lc.name: lc.top1_agreement for lc in p.layers},
                 "top-5 Jaccard": {lc.name: lc.top5_jaccard for lc in p.layers},
                 "Cohen's kappa": {lc.name: lc.kappa for lc in p.layers}},
                folder, f"agreement-{i}", f"Agreement per layer: {p.a.name} vs {p.b.name}", "value")
            f["thresholds"] = plots.thresholds_plot(
                {p.a.name: {lc.name: lc.threshold_a for lc in p.layers},
                 p.b.name: {lc.name: lc.threshold_b for lc in p.layers}},
                folder, f"thresholds-{i}")
            f["above"] = plots.grouped_bars_plot(
                {side: _sum_levels([getattr(lc, attr)["broad"] for lc in p.layers])
                 for side, attr in ((p.a.name, "above_a"), (p.b.name, "above_b"))},
                folder, f"above-{i}", "Neurons above the global threshold per category (all layers)", "neurons")
        figs.append(f)
    ranking = quality_ranking(runs) if ranking is None else ranking
    grounded = any(r.get(GROUNDING_MEANS[0]) is not None for r in ranking)
    return render("compare.html.j2", out / "compare.html", result=result, figs=figs, runs=runs,
                  files="compare_files", ranking=ranking, grounding=GROUNDING_MEANS if grounded else ())


def _sum_levels(dicts: list[dict[str, int]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))
