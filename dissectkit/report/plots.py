"""Summary plots (matplotlib figures without pyplot, imported lazily), saved as PNG and SVG.

This module imports nothing from dissectkit at the top, so a child process can load it by file
path and draw the report's summary plots (:func:`summary_plots`, :func:`main`) with only numpy and
matplotlib imported (``dissectkit.report.plot_process``).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

NONE = "(no concept)"
UNCATEGORISED = "(none)"  # a concept without a category (as in dissectkit.labelling.measures)


def _figure(figsize: tuple[float, float]):
    """A matplotlib ``Figure`` outside pyplot: no global figure manager, no GUI backend, safe to
    draw in a worker thread while the report's images are computed."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.hashsalt"] = "dissectkit"
    return Figure(figsize=figsize)


def pyplot():
    """pyplot on the Agg backend, for callers that draw with it (the study figures); the report's
    own plots use :func:`_figure`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "dissectkit"
    return plt


def save(fig: Any, folder: Path, stem: str) -> dict[str, str]:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` in ``folder`` (no timestamps: reproducible).

    The tight bounding box is computed once and used for both files (one draw per file).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    folder.mkdir(parents=True, exist_ok=True)
    names = files(stem)
    png, svg = folder / names["png"], folder / names["svg"]
    bbox = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    fig.savefig(png, dpi=110, bbox_inches=bbox, metadata={"Software": None})
    fig.savefig(svg, bbox_inches=bbox, metadata={"Date": None, "Creator": None})
    if "matplotlib.pyplot" in sys.modules:  # a pyplot figure is released (a plain Figure needs nothing)
        sys.modules["matplotlib.pyplot"].close(fig)
    return names


def files(stem: str) -> dict[str, str]:
    """The file names :func:`save` writes for ``stem`` (known before the figure is drawn)."""
    return {"png": f"{stem}.png", "svg": f"{stem}.svg"}


def short(name: str, limit: int = 24) -> str:
    """``name`` cut to ``limit`` characters from the left (``…`` marks the cut)."""
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def thresholds_plot(series: dict[str, dict[str, float | None]], folder: Path, stem: str,
                    title: str = "Layer similarity threshold (mean top-1 score)") -> dict[str, str]:
    """One line per series over layers: ``series[name][layer] = mean top-1 score``."""
    layers = list(dict.fromkeys(layer for values in series.values() for layer in values))
    fig = _figure((max(5.0, 0.45 * len(layers) + 3), 3.4))
    ax = fig.subplots()
    x = np.arange(len(layers))
    for name, values in series.items():
        y = np.array([np.nan if values.get(layer) is None else values[layer] for layer in layers], dtype=float)
        ax.plot(x, y, marker="o", label=short(name, 40))
    ax.set_xticks(x, [short(layer) for layer in layers], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean top-1 score")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return save(fig, folder, stem)


def category_counts(labels: list[str | None], concepts: dict[str, Any], level: str) -> Counter:
    """Count top-1 labels by ``level`` ("category" or "subcategory"); no concept and none set kept apart."""
    counts: Counter = Counter()
    for label in labels:
        if label is None:
            counts[NONE] += 1
            continue
        concept = concepts.get(label)
        value = getattr(concept, level, None) if concept is not None else None
        counts[value or UNCATEGORISED] += 1
    return counts


def stacked_categories_plot(per_layer: dict[str, list[str | None]], concepts: dict[str, Any],
                            folder: Path, stem: str, title: str) -> dict[str, str]:
    """Two stacked-bar panels per layer: broad categories and fine (sub)categories of top-1 labels."""
    import matplotlib

    layers = list(per_layer)
    fig = _figure((max(8.0, 0.7 * len(layers) + 6), 3.8))
    axes = fig.subplots(1, 2)
    for ax, level, name in zip(axes, ("category", "subcategory"), ("broad category", "fine category"), strict=True):
        counts = [category_counts(per_layer[layer], concepts, level) for layer in layers]
        keys = sorted({k for c in counts for k in c}, key=lambda k: (k in (NONE, UNCATEGORISED), k))
        bottom = np.zeros(len(layers))
        x = np.arange(len(layers))
        cmap = matplotlib.colormaps["tab20"]
        for i, key in enumerate(keys):
            vals = np.array([c.get(key, 0) for c in counts], dtype=float)
            colour = "#bbbbbb" if key == NONE else ("#dddddd" if key == UNCATEGORISED else cmap(i % 20))
            ax.bar(x, vals, bottom=bottom, label=short(key, 30), color=colour, edgecolor="white", linewidth=0.3)
            bottom += vals
        ax.set_xticks(x, [short(layer) for layer in layers], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("neurons")
        ax.set_title(f"{title}: {name}", fontsize=9)
        if keys:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save(fig, folder, stem)


def score_distribution_plot(per_layer: dict[str, list[float]], folder: Path, stem: str, title: str) -> dict[str, str]:
    """A box plot of top-1 scores per layer (neurons with no concept are left out)."""
    layers = list(per_layer)
    fig = _figure((max(5.0, 0.45 * len(layers) + 3), 3.4))
    ax = fig.subplots()
    data = [np.asarray(per_layer[layer], dtype=float) for layer in layers]
    positions = [i for i, d in enumerate(data) if len(d)]
    if positions:
        ax.boxplot([data[i] for i in positions], positions=positions, widths=0.6, showfliers=True,
                   flierprops={"markersize": 2})
    ax.set_xticks(np.arange(len(layers)), [short(layer) for layer in layers], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.7, len(layers) - 0.3)
    ax.set_ylabel("top-1 score")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return save(fig, folder, stem)


def grouped_bars_plot(groups: dict[str, dict[str, float]], folder: Path, stem: str, title: str, ylabel: str) -> dict[str, str]:
    """Grouped bars: ``groups[series][x] = value`` (e.g. agreement per layer, counts per category)."""
    xs = list(dict.fromkeys(x for values in groups.values() for x in values))
    fig = _figure((max(5.0, 0.5 * len(xs) * max(1, len(groups)) / 2 + 3), 3.4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(xs))
    for i, (name, values) in enumerate(groups.items()):
        ax.bar(x + i * width - 0.4 + width / 2, [values.get(k, 0.0) for k in xs], width, label=short(name, 40))
    ax.set_xticks(x, [short(k) for k in xs], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    if len(groups) > 1:
        ax.legend(fontsize=7)
    return save(fig, folder, stem)


def summary_plots(data: dict[str, Any], folder: Path) -> None:
    """The run report's summary plots from plain data (``plot_process.summary_data``): per label
    set ``categories-setN`` and ``scores-setN``, then ``thresholds`` over all sets."""
    from types import SimpleNamespace

    concepts = {text: SimpleNamespace(category=c, subcategory=s) for text, (c, s) in data["concepts"].items()}
    thresholds = {}
    for lsi, ls in enumerate(data["sets"]):
        thresholds[ls["key"]] = ls["thresholds"]
        stacked_categories_plot(ls["top1"], concepts, folder, f"categories-set{lsi}", ls["method"])
        score_distribution_plot(ls["scores"], folder, f"scores-set{lsi}", f"Top-1 score distribution ({ls['method']})")
    if thresholds:
        thresholds_plot(thresholds, folder, "thresholds")


def main(argv: list[str]) -> None:
    """The child process: :func:`summary_plots` of the JSON file ``argv[0]`` into the folder ``argv[1]``."""
    import json

    summary_plots(json.loads(Path(argv[0]).read_text(encoding="utf-8")), Path(argv[1]))
