"""``study/study.html``: the study's tables and figures, linking to every layer of the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dissectkit.study import PAGE
from dissectkit.study.analysis import Group

TEMPLATE = Path(__file__).with_name("study.html.j2")


def report_layer_links(run: Any) -> dict[tuple[str, str, str, str], str]:
    """``(dissector, target, method, layer) -> href`` (relative to the run directory) of every layer
    of the run's HTML report, empty when the recipe has no ``html`` reporter (the report's own
    naming: :func:`dissectkit.report.html.layer_keys` and :func:`~dissectkit.report.html.layer_href`)."""
    from dissectkit.report.html import HtmlOptions, is_split, layer_href, layer_keys

    reporters = ((run.recipe.get("output") or {}).get("reporters")) or []
    html = next((r for r in reporters if isinstance(r, dict) and r.get("name") == "html"), None)
    if html is None:
        return {}
    split = is_split(run, (html.get("params") or {}).get("split_above", HtmlOptions().split_above))
    return {
        (ls.dissector, ls.target, ls.method, layer): layer_href(key, split)
        for (lsi, layer), key in layer_keys(run).items()
        for ls in [run.label_sets[lsi]]
    }


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def write_page(run: Any, groups: list[Group], folder: Path, files: dict[str, Path],
               figures: dict[str, dict[str, str]]) -> Path:
    """Render ``study.html`` into ``folder`` (the run's ``study/``)."""
    from jinja2 import Environment

    from dissectkit.report.html import REPORT

    links = {k: f"../{v}" for k, v in report_layer_links(run).items()}
    has_report = REPORT in run.pages.values() or (Path(run.out_dir) / REPORT).exists() or bool(links)
    html = Environment(autoescape=True).from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        run=run, groups=groups, links=links, fmt=_fmt, figures=figures,
        files={k: p.name for k, p in files.items()}, report=f"../{REPORT}" if has_report else None,
        n_targets=len({t.target for g in groups for t in g.targets}),
    )
    path = folder / PAGE
    path.write_text(html, encoding="utf-8")
    return path
