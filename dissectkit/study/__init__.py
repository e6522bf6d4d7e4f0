"""The Mammo-CLIP Dissect study of a run (docs/study.md): a recipe's ``study:`` section turns it on.

:func:`run_study` writes ``<run>/study/``: ``thresholds.csv``, ``categories.csv``,
``category_shift.csv``, ``underrepresented.csv``, ``neurons.csv``, three figures (PNG + SVG) and
``study.html``. It reads only the run's result (labels, concepts, the resolved recipe), so it works
on a finished run reloaded from disk too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLDER = "study"


def run_study(result: Any, out_dir: str | Path | None = None) -> Path | None:
    """Write the study files of a run whose recipe has a ``study:`` section; ``None`` otherwise."""
    config = (result.recipe or {}).get("study")
    if config is None:
        return None
    from dissectkit.host.recipe import StudyConfig
    from dissectkit.study.analysis import analyse
    from dissectkit.study.figures import write_figures
    from dissectkit.study.page import write_page
    from dissectkit.study.tables import write_tables

    cfg = StudyConfig.model_validate(config)
    folder = Path(out_dir or result.out_dir) / FOLDER
    groups = analyse(result, cfg.top_concepts)
    files = write_tables(groups, folder)
    figures = write_figures(groups, folder, cfg.general_categories, cfg.top_categories)
    return write_page(result, groups, folder, files, figures)
