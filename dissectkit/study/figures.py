"""The study's three figures (PNG + SVG): thresholds per layer, mammography vs non-mammography
shares, and the top categories per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.report.plots import pyplot, save, short
from dissectkit.study.analysis import NONE, Group


def _series_name(g: Group, target: str, many: bool) -> str:
    return f"{g.name}: {target}" if many else target


def _positions(groups: list[Group]) -> list[str]:
    """x-axis labels: layer position and the first target's layer name at it."""
    names: dict[int, str] = {}
    for g in groups:
        for t in g.targets:
            for i, layer in enumerate(t.layers):
                names.setdefault(i, layer)
    return [f"{i}: {short(names[i], 22)}" for i in sorted(names)]


def thresholds_figure(groups: list[Group], folder: Path) -> dict[str, str]:
    """Layer threshold of every target (solid) and the global threshold (dashed) per layer position."""
    plt = pyplot()
    xs = _positions(groups)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(xs) + 3), 3.8))
    many = len(groups) > 1
    for g in groups:
        for t in g.targets:
            y = {r["layer_index"]: r["threshold"] for r in g.thresholds if r["target"] == t.target}
            ax.plot(list(y), [np.nan if v is None else v for v in y.values()], marker="o", markersize=3,
                    label=_series_name(g, f"{t.role} ({t.target})" if t.role != t.target else t.target, many))
        glob = {r["layer_index"]: r["global_threshold"] for r in g.thresholds}
        ax.plot(list(glob), [np.nan if v is None else v for v in glob.values()], "k--", linewidth=1,
                label=_series_name(g, "global threshold", many))
    ax.set_xticks(np.arange(len(xs)), xs, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("mean top-1 score")
    ax.set_title("Layer similarity thresholds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, folder, "thresholds")


def mammography_figure(groups: list[Group], folder: Path, general: list[str]) -> dict[str, str]:
    """Share of interpretable neurons labelled with a mammography concept (category not in
    ``general``) per layer, and the overall mammography / non-mammography split per target."""
    plt = pyplot()
    xs = _positions(groups)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(max(9.0, 0.35 * len(xs) + 7), 3.8),
                                 gridspec_kw={"width_ratios": [3, 1]})
    many = len(groups) > 1
    names, mammo, other = [], [], []
    for g in groups:
        for t in g.targets:
            per: dict[int, list[int]] = {}
            for r in g.categories:
                if r["target"] != t.target or r["level"] != "category":
                    continue
                m = per.setdefault(r["layer_index"], [0, 0])
                m[0 if r["category"] not in general else 1] += r["interpretable"]
            y = [m[0] / (m[0] + m[1]) if m[0] + m[1] else np.nan for m in per.values()]
            ax.plot(list(per), y, marker="o", markersize=3, label=_series_name(g, t.target, many))
            total = [sum(m[0] for m in per.values()), sum(m[1] for m in per.values())]
            names.append(short(_series_name(g, t.role, many), 20))
            n = max(1, sum(total))
            mammo.append(total[0] / n)
            other.append(total[1] / n)
    ax.set_xticks(np.arange(len(xs)), xs, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("mammography share")
    ax.set_title("Interpretable neurons with a mammography concept", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    x = np.arange(len(names))
    bx.bar(x, mammo, label="mammography", color="#3b75af")
    bx.bar(x, other, bottom=mammo, label="non-mammography", color="#bbbbbb")
    bx.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    bx.set_ylabel("share (all layers)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, folder, "mammography_share")


def top_categories_figure(groups: list[Group], folder: Path, top: int, level: str = "category",
                          name: str = "top_categories") -> dict[str, str]:
    """One panel per target: per layer, its ``top`` categories at ``level`` by interpretable neurons
    (stacked; the rest as "other"). ``category`` (the workbook's sheets) is the published figure
    (Fig. 4C), ``subcategory`` (the column headers) the finer one. Ties are ordered as published
    (``categories.csv``'s ``rank``: first appearance by descending top-1 score)."""
    plt = pyplot()
    panels: list[tuple[str, dict[int, dict[str, int]]]] = []
    for g in groups:
        for t in g.targets:
            per: dict[int, dict[str, int]] = {}
            for r in sorted(g.categories, key=lambda r: r["rank"] or 0):
                if r["target"] == t.target and r["level"] == level and r["interpretable"]:
                    per.setdefault(r["layer_index"], {})[r["category"]] = r["interpretable"]
            panels.append((_series_name(g, f"{t.role}: {t.target}" if t.role != t.target else t.target, len(groups) > 1), per))
    xs = _positions(groups)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(7.0, 0.35 * len(xs) + 4), 2.4 * len(panels) + 0.8),
                             squeeze=False, sharex=True)
    shown = sorted({c for _, per in panels for counts in per.values() for c in _top(counts, top)})
    cmap = plt.get_cmap("tab20")
    colours = {c: cmap(i % 20) for i, c in enumerate(shown)}
    colours["other"] = "#dddddd"
    for ax, (title, per) in zip(axes[:, 0], panels, strict=True):
        bottom = np.zeros(len(xs))
        for cat in [*shown, "other"]:
            vals = np.zeros(len(xs))
            for i, counts in per.items():
                keep = _top(counts, top)
                vals[i] = sum(v for c, v in counts.items() if c not in keep) if cat == "other" else (
                    counts.get(cat, 0) if cat in keep else 0)
            if vals.any():
                ax.bar(np.arange(len(xs)), vals, bottom=bottom, color=colours[cat], label=short(cat, 28),
                       edgecolor="white", linewidth=0.3)
            bottom += vals
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("neurons")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1, 0].set_xticks(np.arange(len(xs)), xs, rotation=60, ha="right", fontsize=7)
    what = "categories (workbook sheets)" if level == "category" else "sub-categories"
    fig.suptitle(f"Top {top} {what} per layer (interpretable neurons)", fontsize=10)
    fig.tight_layout()
    return save(fig, folder, name)


def _top(counts: dict[str, int], n: int) -> set[str]:
    """The ``n`` first categories of ``counts``, given in the published order (count, then first
    appearance); uncategorised labels are not a category."""
    return {c for c in [c for c in counts if c != NONE][:n]}


def write_figures(groups: list[Group], folder: Path, general: list[str], top: int) -> dict[str, dict[str, Any]]:
    return {
        "thresholds": thresholds_figure(groups, folder),
        "mammography_share": mammography_figure(groups, folder, general),
        "top_categories": top_categories_figure(groups, folder, top, "category", "top_categories"),
        "top_subcategories": top_categories_figure(groups, folder, top, "subcategory", "top_subcategories"),
    }
