"""``study/study.html``: the study's tables and figures, linking to every layer of the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dissectkit.study.analysis import Group

PAGE = "study.html"

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Study: {{ run.name }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left}td.num{text-align:right}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.note{color:#666;font-size:.85em}
</style></head><body>
<h1>Study: {{ run.name }}</h1>
<p>{{ n_targets }} target(s); layer thresholds are the mean top-1 score of a layer; the global threshold of a layer
position is the largest of the targets' thresholds there; a neuron is interpretable when its top-1 score is
<b>&gt;=</b> the global threshold. Files: {% for name, path in files.items() %}<a href="{{ path }}">{{ path }}</a>{{ ", " if not loop.last }}{% endfor %}.
{% if report %}Full report: <a href="{{ report }}">{{ report }}</a>.{% else %}<span class="note">This run has no HTML report (add the <code>html</code> reporter for per-layer pages).</span>{% endif %}</p>
{% for name, fig in figures.items() %}<h2>{{ name.replace("_", " ") }}</h2>
<a href="{{ fig.svg }}"><img src="{{ fig.png }}" alt="{{ name }}"></a>{% endfor %}
{% for g in groups %}
<h2>{{ g.name }}: layers</h2>
<table><tr><th>target</th><th>role</th><th>#</th><th>layer</th><th>neurons</th><th>threshold</th><th>global</th><th>&gt;= local</th><th>&gt;= global</th></tr>
{% for r in g.thresholds %}<tr><td>{{ r.target }}</td><td>{{ r.role }}</td><td class="num">{{ r.layer_index }}</td>
<td>{% set href = links.get((g.dissector, r.target, g.method, r.layer)) %}{% if href %}<a href="{{ href }}">{{ r.layer }}</a>{% else %}{{ r.layer }}{% endif %}</td>
<td class="num">{{ r.n_neurons }}</td><td class="num">{{ fmt(r.threshold) }}</td><td class="num">{{ fmt(r.global_threshold) }}</td>
<td class="num">{{ r.n_meets_local }}</td><td class="num">{{ r.n_meets_global }}</td></tr>{% endfor %}</table>
{% if g.shifts %}<h2>{{ g.name }}: category shift (broad categories)</h2>
<table><tr><th>category</th><th>shift</th><th>share from</th><th>share to</th><th>difference</th></tr>
{% for r in g.shifts if r.level == "category" %}<tr><td>{{ r.category }}</td><td>{{ r.shift }}</td><td class="num">{{ fmt(r.share_from) }}</td>
<td class="num">{{ fmt(r.share_to) }}</td><td class="num">{{ fmt(r.difference) }}</td></tr>{% endfor %}</table>{% endif %}
<h2>{{ g.name }}: underrepresented concepts ({{ g.underrepresented|length }})</h2>
<p>{% for r in g.underrepresented %}{{ r.concept }}{% if r.category %} <span class="note">({{ r.category }})</span>{% endif %}{{ "; " if not loop.last }}{% endfor %}</p>
{% endfor %}
</body></html>
"""


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
    has_report = (Path(run.out_dir) / REPORT).exists() or bool(links)
    html = Environment(autoescape=True).from_string(TEMPLATE).render(
        run=run, groups=groups, links=links, fmt=_fmt, figures=figures,
        files={k: p.name for k, p in files.items()}, report=f"../{REPORT}" if has_report else None,
        n_targets=len({t.target for g in groups for t in g.targets}),
    )
    path = folder / PAGE
    path.write_text(html, encoding="utf-8")
    return path
