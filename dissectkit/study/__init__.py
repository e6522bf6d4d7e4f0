"""The Mammo-CLIP Dissect study of a run (docs/study.md), written by the ``study`` reporter into
``<run>/study/``; :func:`run_study` writes it for a finished run reloaded from disk too."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from dissectkit.base.params import Params, concept_categories

FOLDER = "study"
PAGE = "study.html"
PAGE_TITLE = "Study: thresholds, categories, category shift and underrepresented concepts"


class StudyParams(Params):
    top_concepts: int = Field(10, ge=1, description="concepts listed per neuron in study/neurons.csv")
    general_categories: Annotated[list[str], concept_categories()] = Field(default_factory=lambda: ["distractor"], description="categories that are not mammography concepts")
    top_categories: int = Field(3, ge=1, description="categories per layer in the top-categories figures")
    constant_neurons: Literal["exclude", "include"] = Field(
        "exclude", description="neurons with a constant activation: exclude (dissectkit: out of the layer mean, "
        "never interpretable) or include (published: counted as any labelled neuron)")


def write_study(result: Any, out_dir: str | Path, params: StudyParams | None = None) -> Path:
    """Write ``<out_dir>/study/`` and return its page."""
    from dissectkit.study.analysis import analyse
    from dissectkit.study.drift import write_drift
    from dissectkit.study.figures import write_figures
    from dissectkit.study.page import write_page
    from dissectkit.study.tables import write_tables

    params = params or StudyParams()
    folder = Path(out_dir) / FOLDER
    groups = analyse(result, params.top_concepts, params.constant_neurons)
    files = write_tables(groups, folder)
    figures = write_figures(groups, folder, params.general_categories, params.top_categories)
    drift_files, drift_figures = write_drift(result, groups, folder, params.general_categories)
    files.update(drift_files)
    figures.update(drift_figures)
    return write_page(result, groups, folder, files, figures)


def run_study(result: Any, out_dir: str | Path | None = None) -> Path | None:
    """The study of a finished run whose recipe lists the ``study`` reporter (or, in runs made
    before it was one, has a ``study:`` section); ``None`` otherwise."""
    recipe = result.recipe or {}
    listed = [r for r in (recipe.get("output") or {}).get("reporters") or [] if isinstance(r, dict) and r.get("name") == FOLDER]
    section = recipe.get("study")
    if listed:
        params = listed[0].get("params") or {}
    elif section is not None:
        params = {k: v for k, v in section.items() if k != "preset" and v is not None}
    else:
        return None
    return write_study(result, out_dir or result.out_dir, StudyParams.model_validate(params))
