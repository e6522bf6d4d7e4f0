"""The self-contained HTML report of one run: layer tables, neuron cards and summary plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from dissectkit.base.params import Params
from dissectkit.labelling.measures import layer_threshold
from dissectkit.report import plots
from dissectkit.report.assets import slug
from dissectkit.report.attributes import attribute_panels
from dissectkit.report.plot_process import SummaryPlots
from dissectkit.report.render import render
from dissectkit.report.units import score_note
from dissectkit.report.visuals import Visuals

FILES = "report_files"
REPORT = "report.html"
EVALUATION = "evaluation.csv"
EVALUATION_MARKS = ("<!-- dissectkit:evaluation -->", "<!-- /dissectkit:evaluation -->")


class HtmlOptions(Params):
    """Knobs of the HTML reporter, the ``html`` reporter's params (see ``docs/reports.md``)."""

    top_images: int = Field(5, ge=0, description="top-activating probe images per neuron card")
    top_concepts: int = Field(5, ge=1, description="concepts with scores per neuron card")
    thumb_size: int = Field(112, ge=16, le=512, description="longest side of a thumbnail, pixels")
    heatmap_alpha: float = Field(0.6, ge=0.0, le=1.0, description="opacity of the heatmap at its maximum")
    split_above: int = Field(400, ge=0, description="one page per layer when the run has more neurons than this")
    max_cards: int | None = Field(None, ge=0, description="cards for the first N neurons of each layer only")
    colormap: str = Field("inferno", description="matplotlib colormap of the heatmaps")
    threads: int | None = Field(None, ge=1, le=64, description="threads reading and thumbnailing the shown probe images (default: the CPUs available, at most 4)")


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
    attributes: list[dict[str, Any]] = field(default_factory=list)


def no_concept_reason(ll: Any, unit: int) -> str | None:
    """Why neuron ``unit`` of ``ll`` has no concept (``None`` when it has one).

    The one place the report reads a method's per-neuron reason (``LayerLabels.reason``: a
    ``NO_CONCEPT_REASONS`` code, shown with its description); without one it says "no concept".
    """
    from dissectkit.labelling.evidence import NO_CONCEPT_REASONS

    if ll.neurons[unit]:
        return None
    code = ll.reason(unit)
    return f"{code}: {NO_CONCEPT_REASONS.get(code, code)}" if code else "no concept"


def card_columns(ls: Any, layer: str, unit: int) -> list[tuple[str, str, Any]]:
    """``(name, description, value)`` of a neuron's per-neuron columns shown on its card: those with a
    direction and every number (label quality, stability and its interval, ...), where it has a value;
    the margins and grounding groups have their own lines on the card."""
    from dissectkit.labelling.column_groups import all_columns
    from dissectkit.labelling.grounding import GROUNDING
    from dissectkit.labelling.margins import MARGINS

    own_line = {c.name for group in (MARGINS, GROUNDING) for c in group.columns}
    values = ls.columns.get(layer, {})
    shown = [c for c in all_columns()
             if (c.better is not None or c.kind == "float") and c.name in values and c.name not in own_line]
    return [(c.name, c.description, values[c.name][unit]) for c in shown
            if unit < len(values[c.name]) and values[c.name][unit] is not None]


def _neurons(run: Any, ls: Any, layer: str, ll: Any, visuals: Visuals, opts: HtmlOptions) -> list[dict[str, Any]]:
    index = run.concept_index()
    margin = _layer_columns(ls, layer, len(ll.neurons), ("margin", "near_tie"))
    from dissectkit.labelling.grounding import COLUMNS as GROUNDING_COLUMNS

    grounding = _layer_columns(ls, layer, len(ll.neurons), GROUNDING_COLUMNS)
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
            "reason": no_concept_reason(ll, unit),
            "columns": card_columns(ls, layer, unit) if with_card else [],
            "grounding": {name: values[unit] for name, values in grounding.items()},
            "top_ids": run.top_image_ids(ls.target, layer, unit)[: opts.top_images] if with_card else [],
            "margin": margin["margin"][unit], "near_tie": margin["near_tie"][unit],
        })
    return out


def _layer_columns(ls: Any, layer: str, n: int, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Per-neuron columns ``names`` of a layer (``None`` each where a column was not computed)."""
    columns = ls.columns.get(layer) or {}
    return {name: list(columns.get(name) or [None] * n) for name in names}


def _summary(ll: Any, neurons: list[dict[str, Any]]) -> dict[str, Any]:
    labelled = [n for n in neurons if n["label"] is not None]
    counts: dict[str, int] = {}
    for n in labelled:
        key = n["category"] or plots.UNCATEGORISED
        counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return {
        "n": len(neurons), "labelled": len(labelled), "threshold": layer_threshold(ll),
        "distinct": len({n["label"] for n in labelled}), "top_categories": top,
    }


def _plot_files(run: Any) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
    """The files of the summary plots (``plots.summary_plots``; known before they are drawn)."""
    figs = [{"categories": plots.files(f"categories-set{lsi}"), "scores": plots.files(f"scores-set{lsi}")}
            for lsi in range(len(run.label_sets))]
    return figs, (plots.files("thresholds") if run.label_sets else None)




def card_units(run: Any, opts: HtmlOptions) -> dict[tuple[str, str], list[int]]:
    """The units shown with a card, per (target, layer), over every label set."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for ls in run.label_sets:
        for layer, ll in ls.layers.items():
            n = len(ll.neurons) if opts.max_cards is None else min(opts.max_cards, len(ll.neurons))
            wanted.setdefault((ls.target, layer), set()).update(range(n))
    return {key: sorted(units) for key, units in wanted.items()}


def layer_keys(run: Any) -> dict[tuple[int, str], str]:
    """``(label set index, layer) -> key`` of every layer view, in report order: the key is the
    layer's anchor (``#key``) and, in a split report, its page ``report-<key>.html``."""
    keys: dict[tuple[int, str], str] = {}
    used: set[str] = set()
    for lsi, ls in enumerate(run.label_sets):
        for layer in ls.layers:
            key = f"s{lsi}-{slug(layer, 40)}"
            while key in used:
                key += "_"
            used.add(key)
            keys[(lsi, layer)] = key
    return keys


def is_split(run: Any, split_above: int) -> bool:
    """Whether the report puts each layer on its own page (more neurons than ``split_above``)."""
    return sum(len(ll.neurons) for ls in run.label_sets for ll in ls.layers.values()) > split_above


def layer_href(key: str, split: bool) -> str:
    """The link (relative to the run directory) of a layer view."""
    return f"{f'report-{key}.html' if split else REPORT}#{key}"


def write_html_report(run: Any, out_dir: Path, opts: HtmlOptions | None = None, plots_child: Any = None) -> Path:
    """Write ``report.html`` (+ per-layer pages when large) and ``report_files/`` into ``out_dir``.

    The summary plots are drawn by a child process (``plot_process``; ``plots_child``: one started
    before, see :func:`~dissectkit.report.plot_process.early_child`) while the card images are
    computed and the pages rendered (their file names are known in advance); it returns once they
    are drawn.
    """
    opts = opts or HtmlOptions()
    out_dir = Path(out_dir)
    folder = out_dir / FILES
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    drawing = SummaryPlots(run, folder / "plots", plots_child)
    try:
        page = _write_pages(run, out_dir, opts, folder)
    except BaseException:
        drawing.cancel()
        raise
    drawing.finish()
    return page


def _write_pages(run: Any, out_dir: Path, opts: HtmlOptions, folder: Path) -> Path:
    """The card images, then ``report.html`` and the per-layer pages."""
    total = sum(len(ll.neurons) for ls in run.label_sets for ll in ls.layers.values())
    split = is_split(run, opts.split_above)
    keys = layer_keys(run)
    figs, threshold_plot = _plot_files(run)
    visuals = Visuals(run, folder, opts)
    visuals.prepare(card_units(run, opts))
    sets, views = [], []
    for lsi, ls in enumerate(run.label_sets):
        set_views = []
        for layer, ll in ls.layers.items():
            neurons = _neurons(run, ls, layer, ll, visuals, opts)
            key = keys[(lsi, layer)]
            view = LayerView(key, lsi, layer, ll.method, neurons, _summary(ll, neurons))
            view.categories = sorted({n["category"] or plots.UNCATEGORISED for n in neurons if n["label"]})
            view.n_cards = sum(1 for n in neurons if n["card"])
            view.attributes = attribute_panels(run, ll, visuals, opts)
            if split:
                view.page = f"report-{key}.html"
            set_views.append(view)
        views += set_views
        sets.append({"index": lsi, "ls": ls, "views": set_views, "plots": figs[lsi], "score_note": score_note(ls)})

    context = {
        "run": run, "sets": sets, "files": FILES, "split": split, "total": total,
        "threshold_plot": threshold_plot, "live": visuals.live, "opts": opts,
        "n_images": len(run.probe_ids), "n_concepts": len(run.concepts),
        "recipe_summary": _recipe_summary(run.recipe),
        "pages": {title: href for title, href in run.pages.items() if href != REPORT},
        "evaluation_html": evaluation_html(out_dir),
    }
    if split:
        for view in views:
            render("layer_page.html.j2", out_dir / view.page, view=view, ls=run.label_sets[view.label_set], **context)
    page = render("report.html.j2", out_dir / REPORT, **context)
    visuals.keep()  # what the cards needed of the images, for the next report of these activations
    return page


def _recipe_summary(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for kind in ("dissector", "target", "probe", "concepts", "method"):
        spec = recipe.get(kind) if isinstance(recipe, dict) else None
        if isinstance(spec, dict) and "name" in spec:
            out.append((kind, str(spec["name"])))
        elif isinstance(spec, list):
            out.append((kind, ", ".join(str(s.get("name", s)) if isinstance(s, dict) else str(s) for s in spec)))
    return out


def evaluation_html(out_dir: Path) -> str:
    """The report's evaluation section from ``<run>/evaluation.csv`` (``dissectkit evaluate`` writes it),
    between its markers; only the markers when there is none."""
    import csv

    from dissectkit.report.render import environment, fmt

    path = Path(out_dir) / EVALUATION
    inner = ""
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        columns = [c for c in (rows[0] if rows else {}) if any(r[c] != "" for r in rows)]
        shown = [{c: (fmt(float(r[c])) if r[c] and c not in ("dissector", "target", "method", "layer") else r[c])
                  for c in columns} for r in rows]
        inner = environment().get_template("evaluation.html.j2").render(rows=shown, columns=columns, source=EVALUATION)
    return EVALUATION_MARKS[0] + inner + EVALUATION_MARKS[1]


def update_evaluation_section(out_dir: Path) -> Path | None:
    """Put the evaluation section into a finished run's ``report.html`` (between its markers, which
    every report written since has); the report is otherwise unchanged. ``None`` without a report."""
    report = Path(out_dir) / REPORT
    if not report.is_file():
        return None
    text = report.read_text(encoding="utf-8")
    start, end = EVALUATION_MARKS
    section = evaluation_html(out_dir)
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:  # a report written before the section existed: before the end of the body
        at = text.rfind("</body>")
        text = text[:at] + section + text[at:] if at >= 0 else text + section
    report.write_text(text, encoding="utf-8")
    return report
