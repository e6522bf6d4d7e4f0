"""The self-contained HTML report of one run: layer tables, neuron cards and summary plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.report import plots
from dissectkit.report.assets import (
    ImageAssets,
    colormap_lut,
    constant_units,
    gather_heatmaps,
    heatmap_rgba,
    normalise_per_neuron,
    png_data_uri,
    slug,
    top_images,
)
from dissectkit.report.render import render

FILES = "report_files"
REPORT = "report.html"


@dataclass
class HtmlOptions:
    """Knobs of the HTML reporter (see ``docs/reports.md``)."""

    top_images: int = 5
    top_concepts: int = 5
    thumb_size: int = 112
    heatmap_alpha: float = 0.6
    split_above: int = 400
    max_cards: int | None = None
    colormap: str = "inferno"


@dataclass
class LayerView:
    key: str
    label_set: int
    layer: str
    method: str
    neurons: list[dict[str, Any]]
    summary: dict[str, Any]
    page: str | None = None
    categories: list[str] = field(default_factory=list)
    n_cards: int = 0


def _threshold(ll: Any) -> float | None:
    scores = [ranked[0][1] for ranked in ll.neurons if ranked]
    return float(np.mean(scores)) if scores else None


class _Visuals:
    """Top images, heatmaps and outlines per (target, layer), computed once and shared by label sets."""

    def __init__(self, run: Any, folder: Path, opts: HtmlOptions) -> None:
        self.run = run
        self.opts = opts
        self.live = run.probe is not None and run.activations is not None
        self.assets = ImageAssets(run.probe, folder, FILES, opts.thumb_size) if self.live else None
        self.cache: dict[tuple[str, str], list[list[dict[str, Any]]] | None] = {}
        self.lut = colormap_lut(opts.colormap) if self.live else None

    def images(self, target: str, layer: str, unit: int, concepts: list[str]) -> list[dict[str, Any]]:
        per_unit = self._layer(target, layer)
        if per_unit is None or unit >= len(per_unit):
            return []
        out = []
        for entry in per_unit[unit]:
            img = dict(entry)
            img["outlines"] = [
                {"concept": c, "src": src}
                for c in concepts if (src := self.assets.outline(entry["index"], c)) is not None
            ]
            out.append(img)
        return out

    def _layer(self, target: str, layer: str) -> list[list[dict[str, Any]]] | None:
        key = (target, layer)
        if key in self.cache:
            return self.cache[key]
        self.cache[key] = None
        if not self.live:
            return None
        acts = self.run.activations(target, layer)
        if acts is None:
            return None
        idx, vals = top_images(acts, self.opts.top_images)
        heat = None
        if self.run.spatial_maps is not None:
            heat = gather_heatmaps(self.run.spatial_maps, target, layer, idx)
        uris: np.ndarray | None = None
        if heat is not None:
            rgba = heatmap_rgba(normalise_per_neuron(heat), self.lut, self.opts.heatmap_alpha)
            uris = np.empty(idx.shape, dtype=object)
            for k in range(idx.shape[0]):
                for j in range(idx.shape[1]):
                    uris[k, j] = png_data_uri(rgba[k, j])
        dead = constant_units(acts)
        per_unit: list[list[dict[str, Any]]] = []
        for k in range(idx.shape[0]):
            row: list[dict[str, Any]] = []
            if dead[k]:  # constant activation: no image is "top-activating"
                per_unit.append(row)
                continue
            for j in range(idx.shape[1]):
                index = int(idx[k, j])
                thumb = self.assets.thumb(index)
                if thumb is None:
                    continue
                row.append({
                    "index": index, "src": thumb[0], "w": thumb[1], "h": thumb[2],
                    "id": self.assets.ids.get(index, str(index)), "value": float(vals[k, j]),
                    "heat": None if uris is None else uris[k, j],
                    "masks": self.assets.mask_concepts(index),
                })
            per_unit.append(row)
        self.cache[key] = per_unit
        return per_unit


def _neurons(run: Any, ls: Any, layer: str, ll: Any, visuals: _Visuals, opts: HtmlOptions) -> list[dict[str, Any]]:
    index = run.concept_index()
    out = []
    for unit, ranked in enumerate(ll.neurons):
        label, score = (ranked[0][0], float(ranked[0][1])) if ranked else (None, None)
        concept = index.get(label) if label else None
        top = [
            {"text": c, "score": float(s), "category": getattr(index.get(c), "category", None)}
            for c, s in ranked[: opts.top_concepts]
        ]
        with_card = opts.max_cards is None or unit < opts.max_cards
        images = visuals.images(ls.target, layer, unit, [t["text"] for t in top]) if with_card else []
        out.append({
            "unit": unit, "label": label, "score": score,
            "category": concept.category if concept else None,
            "subcategory": concept.subcategory if concept else None,
            "concepts": top, "n_concepts": len(ranked), "images": images, "card": with_card,
        })
    return out


def _summary(ll: Any, neurons: list[dict[str, Any]]) -> dict[str, Any]:
    labelled = [n for n in neurons if n["label"] is not None]
    counts: dict[str, int] = {}
    for n in labelled:
        key = n["category"] or plots.UNCATEGORISED
        counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return {
        "n": len(neurons), "labelled": len(labelled), "threshold": _threshold(ll),
        "distinct": len({n["label"] for n in labelled}), "top_categories": top,
    }


def write_html_report(run: Any, out_dir: Path, opts: HtmlOptions | None = None) -> Path:
    """Write ``report.html`` (+ per-layer pages when large) and ``report_files/`` into ``out_dir``."""
    opts = opts or HtmlOptions()
    out_dir = Path(out_dir)
    folder = out_dir / FILES
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    visuals = _Visuals(run, folder, opts)
    concepts = run.concept_index()
    total = sum(len(ll.neurons) for ls in run.label_sets for ll in ls.layers.values())
    split = total > opts.split_above

    sets, views, used = [], [], set()
    thresholds: dict[str, dict[str, float | None]] = {}
    for lsi, ls in enumerate(run.label_sets):
        set_views = []
        for layer, ll in ls.layers.items():
            neurons = _neurons(run, ls, layer, ll, visuals, opts)
            key = f"s{lsi}-{slug(layer, 40)}"
            while key in used:
                key += "_"
            used.add(key)
            view = LayerView(key, lsi, layer, ll.method, neurons, _summary(ll, neurons))
            view.categories = sorted({n["category"] or plots.UNCATEGORISED for n in neurons if n["label"]})
            view.n_cards = sum(1 for n in neurons if n["card"])
            if split:
                view.page = f"report-{key}.html"
            set_views.append(view)
        views += set_views
        thresholds[ls.key] = {v.layer: v.summary["threshold"] for v in set_views}
        stem = f"set{lsi}"
        figs = {
            "categories": plots.stacked_categories_plot(
                {v.layer: [n["label"] for n in v.neurons] for v in set_views}, concepts, folder / "plots",
                f"categories-{stem}", ls.method),
            "scores": plots.score_distribution_plot(
                {v.layer: [n["score"] for n in v.neurons if n["score"] is not None] for v in set_views},
                folder / "plots", f"scores-{stem}", f"Top-1 score distribution ({ls.method})"),
        }
        sets.append({"index": lsi, "ls": ls, "views": set_views, "plots": figs})
    threshold_plot = plots.thresholds_plot(thresholds, folder / "plots", "thresholds") if thresholds else None

    context = {
        "run": run, "sets": sets, "files": FILES, "split": split, "total": total,
        "threshold_plot": threshold_plot, "live": visuals.live, "opts": opts,
        "n_images": len(run.probe_ids), "n_concepts": len(run.concepts),
        "recipe_summary": _recipe_summary(run.recipe),
    }
    if split:
        for view in views:
            render("layer_page.html.j2", out_dir / view.page, view=view, ls=run.label_sets[view.label_set], **context)
    return render("report.html.j2", out_dir / REPORT, **context)


def _recipe_summary(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for kind in ("dissector", "target", "probe", "concepts", "method"):
        spec = recipe.get(kind) if isinstance(recipe, dict) else None
        if isinstance(spec, dict) and "name" in spec:
            out.append((kind, str(spec["name"])))
        elif isinstance(spec, list):
            out.append((kind, ", ".join(str(s.get("name", s)) if isinstance(s, dict) else str(s) for s in spec)))
    return out
