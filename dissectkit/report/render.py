"""Jinja2 environment shared by the run report and the comparison report (inline CSS and JS)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["inline_css"] = (TEMPLATES / "style.css").read_text(encoding="utf-8")
    env.globals["inline_js"] = (TEMPLATES / "script.js").read_text(encoding="utf-8")
    env.filters["fmt"] = fmt
    return env


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for display: ``None`` / NaN -> '—', floats with ``digits`` significant digits."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def render(template: str, path: Path, **context: Any) -> Path:
    """Render ``template`` to ``path`` (UTF-8)."""
    html = environment().get_template(template).render(**context)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
