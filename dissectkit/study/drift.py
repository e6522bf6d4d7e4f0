"""Neuron drift through fine-tuning (docs/study.md, "Neuron drift"): for each domain target (role M) and
each target fine-tuned from it (role C, C-...), per unit of every layer they share, its label and
category in both, the Spearman correlation of its activations over the probe between the two, and
whether its concept or category changed; ``study/drift.csv`` and a per-layer figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.study.analysis import NONE, Group, category_of
from dissectkit.study.tables import write_csv

DRIFT = ("dissector", "method", "from_role", "to_role", "from_target", "to_target", "layer_index", "layer", "unit",
         "label_from", "label_to", "category_from", "category_to", "spearman", "concept_changed",
         "category_changed", "mammography_from", "mammography_to", "mammography_change")


def drift_pairs(g: Group) -> list[tuple[Any, Any]]:
    """(M, C) pairs: the domain target and each target fine-tuned from it."""
    by_role = {t.role: t for t in g.targets}
    m = by_role.get("M")
    return [(m, t) for t in g.targets if t.role == "C" or t.role.startswith("C-")] if m else []


def spearman_columns(a: Any, b: Any) -> list[float | None]:
    """Per column, the Spearman correlation of ``a [N, K]`` and ``b [N, K]`` (ties by average rank);
    ``None`` where a column is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    den = np.sqrt((ra * ra).sum(0) * (rb * rb).sum(0))
    num = (ra * rb).sum(0)
    return [float(n / d) if d > 0 else None for n, d in zip(num, den, strict=True)]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Column-wise ranks from 0, ties by their average rank."""
    out = np.empty_like(x)
    for k in range(x.shape[1]):
        _, inv, counts = np.unique(x[:, k], return_inverse=True, return_counts=True)
        out[:, k] = (np.cumsum(counts) - counts + (counts - 1) / 2)[inv]
    return out


def _activations(result: Any, target: str, layer: str) -> Any:
    from dissectkit.base.errors import DataError

    try:
        return result.activations(target, layer).float().numpy()
    except DataError:  # a run reloaded from disk has no cache handles: no correlation
        return None


def analyse_drift(result: Any, groups: list[Group], general: list[str]) -> list[dict[str, Any]]:
    """One row per unit of each (M, C) pair's shared layers (same name and unit count), every group."""
    index = {c.text: c for c in result.concepts}
    rows: list[dict[str, Any]] = []
    rho_cache: dict[tuple[str, str, str], list[float | None] | None] = {}
    for g in groups:
        by_unit = {(r["target"], r["layer"], r["unit"]): r for r in g.neurons}
        for m, c in drift_pairs(g):
            for i, layer in enumerate(m.layers):
                if layer not in c.layers:
                    continue
                units = sorted(u for (t, lay, u) in by_unit if t == m.target and lay == layer)
                if units != sorted(u for (t, lay, u) in by_unit if t == c.target and lay == layer):
                    continue  # not the same architecture at this layer
                key = (m.target, c.target, layer)
                if key not in rho_cache:
                    a, b = _activations(result, m.target, layer), _activations(result, c.target, layer)
                    rho_cache[key] = spearman_columns(a, b) if a is not None and b is not None and a.shape == b.shape else None
                rho = rho_cache[key]
                for u in units:
                    rf, rt = by_unit[(m.target, layer, u)], by_unit[(c.target, layer, u)]
                    lf, lt = rf["label"], rt["label"]
                    cf, ct = (category_of(index.get(x), "category") if x is not None else NONE for x in (lf, lt))
                    mf, mt = (x is not None and cat not in general and cat != NONE for x, cat in ((lf, cf), (lt, ct)))
                    rows.append({
                        "dissector": g.dissector, "method": g.method, "from_role": m.role, "to_role": c.role,
                        "from_target": m.target, "to_target": c.target, "layer_index": i, "layer": layer, "unit": u,
                        "label_from": lf, "label_to": lt, "category_from": cf, "category_to": ct,
                        "spearman": rho[u] if rho is not None else None,
                        "concept_changed": lf != lt, "category_changed": cf != ct,
                        "mammography_from": mf, "mammography_to": mt,
                        "mammography_change": "gained" if mt and not mf else "lost" if mf and not mt else "",
                    })
    return rows


def drift_figure(rows: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """Per layer of each (M, C) pair: the fraction of units whose concept changed (solid), whose
    category changed (dashed), and the mean Spearman correlation (dotted, right axis)."""
    from dissectkit.report.plots import pyplot, save, short

    plt = pyplot()
    series: dict[tuple[str, str, str], dict[int, list[dict[str, Any]]]] = {}
    names: dict[int, str] = {}
    for r in rows:
        series.setdefault((r["dissector"], r["method"], f"{r['from_role']}->{r['to_role']}"), {}).setdefault(
            r["layer_index"], []).append(r)
        names.setdefault(r["layer_index"], r["layer"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) + 4), 3.8))
    rx = ax.twinx()
    many = len({(d, m) for d, m, _ in series}) > 1
    for (d, m, pair), per in series.items():
        xs = sorted(per)
        label = f"{d}/{m}: {pair}" if many else pair
        line = ax.plot(xs, [np.mean([r["concept_changed"] for r in per[x]]) for x in xs], marker="o", markersize=3,
                       label=f"{label}: concept changed")[0]
        ax.plot(xs, [np.mean([r["category_changed"] for r in per[x]]) for x in xs], "--", color=line.get_color(),
                label=f"{label}: category changed")
        rho = [[r["spearman"] for r in per[x] if r["spearman"] is not None] for x in xs]
        if any(rho):
            rx.plot(xs, [np.mean(v) if v else np.nan for v in rho], ":", color=line.get_color(), label=f"{label}: mean Spearman")
    ax.set_xticks(sorted(names), [f"{i}: {short(names[i], 22)}" for i in sorted(names)], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    rx.set_ylim(-1.02, 1.02)
    ax.set_ylabel("fraction of units")
    rx.set_ylabel("mean Spearman (M vs C)")
    ax.set_title("Neuron drift through fine-tuning", fontsize=10)
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    more = rx.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7)
    fig.tight_layout()
    return save(fig, folder, "drift")


def write_drift(result: Any, groups: list[Group], folder: Path, general: list[str]) -> tuple[dict[str, Path], dict[str, Any]]:
    """``drift.csv`` and the drift figure when the run has an (M, C) pair; nothing otherwise."""
    rows = analyse_drift(result, groups, general)
    if not rows:
        return {}, {}
    return {"drift": write_csv(folder / "drift.csv", DRIFT, rows)}, {"drift": drift_figure(rows, folder)}
