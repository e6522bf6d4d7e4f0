"""The Mammo-CLIP Dissect study of a run (docs/study.md), written by the ``study`` reporter into
``<run>/study/``; :func:`run_study` writes it for a finished run reloaded from disk too."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from dissectkit.base.errors import RecipeError, did_you_mean
from dissectkit.base.params import Params

FOLDER = "study"
PAGE = "study.html"
PAGE_TITLE = "Study: thresholds, categories, category shift and underrepresented concepts"


class StudyParams(Params):
    top_concepts: int = Field(10, ge=1, description="concepts listed per neuron in study/neurons.csv")
    general_categories: list[str] = Field(default_factory=lambda: ["distractor"], description="categories that are not mammography concepts")
    top_categories: int = Field(3, ge=1, description="categories per layer in the top-categories figures")
    constant_neurons: Literal["exclude", "include"] = Field(
        "exclude", description="neurons with a constant activation: exclude (dissectkit: out of the layer mean, "
        "never interpretable) or include (published: counted as any labelled neuron)")


def check_categories(params: StudyParams, concepts: list[Any]) -> None:
    """``general_categories`` must name categories (workbook sheets) of the concept set; a
    ``RecipeError`` lists the available ones otherwise (``dissectkit validate`` and the start of a run
    call it)."""
    available = list(dict.fromkeys(c.category for c in concepts if getattr(c, "category", None)))
    unknown = [c for c in params.general_categories if c not in available]
    if not unknown:
        return
    default = "general_categories" not in params.model_fields_set
    listed = ", ".join(repr(c) for c in sorted(available, key=lambda c: (c.strip().lower(), c))) or \
        "none (the concept set has no categories; set general_categories: [])"
    hint = did_you_mean(unknown[0], available)
    if not hint:
        near = [c for c in available if c.strip().lower() == unknown[0].strip().lower()]
        hint = f" Did you mean {near[0]!r} (spaces as the concept set has them)?" if near else ""
    raise RecipeError(
        f"general_categories{' (the default)' if default else ''} names {', '.join(map(repr, unknown))}, which "
        f"{'is not a category' if len(unknown) == 1 else 'are not categories'} of the concept set: every label "
        f"would count as a mammography concept.{hint} Available categories: {listed}."
    )


def write_study(result: Any, out_dir: str | Path, params: StudyParams | None = None) -> Path:
    """Write ``<out_dir>/study/`` and return its page."""
    from dissectkit.study.analysis import analyse
    from dissectkit.study.figures import write_figures
    from dissectkit.study.page import write_page
    from dissectkit.study.tables import write_tables

    params = params or StudyParams()
    folder = Path(out_dir) / FOLDER
    groups = analyse(result, params.top_concepts, params.constant_neurons)
    files = write_tables(groups, folder)
    figures = write_figures(groups, folder, params.general_categories, params.top_categories)
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
