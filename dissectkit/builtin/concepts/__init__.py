"""Built-in concept sets (kind ``concepts``): text, table, mcd-workbook, mammo-birads, cxr-findings."""

from __future__ import annotations

from typing import Literal

from dissectkit.base.contract import ConceptSet
from dissectkit.base.errors import DataError, did_you_mean
from dissectkit.base.params import Params
from dissectkit.base.types import Concept
from dissectkit.builtin.concepts.loaders import bundled, read_table, read_text, read_workbook
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register


class PathParams(Params):
    path: str


class WorkbookParams(Params):
    """``duplicates``: a concept listed under several categories takes the ``last`` (as published)
    or ``first`` one; ``whitespace``: ``keep`` leading / trailing spaces as the workbook has them,
    ``strip`` them, or ``published`` (kept, but variants of one concept that differ only in them are
    one concept, as in the published concept list); ``order``: ``workbook`` or ``sorted``;
    ``concept_list``: the published concept-list file (the set is exactly its concepts)."""

    path: str
    duplicates: Literal["last", "first"] = "last"
    whitespace: Literal["keep", "strip", "published"] = "keep"
    order: Literal["workbook", "sorted"] = "workbook"
    concept_list: str | None = None


class TableParams(Params):
    """``path``: CSV or YAML; ``column``: the concept column (``concept``)."""

    path: str
    column: str = "concept"


class BundledParams(Params):
    """``categories``: keep only these categories (default all; ``[distractor]`` excluded by
    ``distractors: false``)."""

    categories: list[str] | None = None
    distractors: bool = True


class ConceptList(ConceptSet):
    """A fixed list of :class:`Concept` with its source (for messages and fingerprints)."""

    def __init__(self, concepts: list[Concept], source: str) -> None:
        self._concepts = concepts
        self.source = source

    @property
    def concepts(self) -> list[Concept]:
        return list(self._concepts)

    def __len__(self) -> int:
        return len(self._concepts)


def _bundled(name: str):
    def make(params: BundledParams, ctx) -> ConceptList:
        concepts = bundled(name)
        cats = list(dict.fromkeys(c.category for c in concepts))
        if params.categories is not None:
            unknown = [c for c in params.categories if c not in cats]
            if unknown:
                raise DataError(
                    f"{name}: unknown categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))}."
                    f"{did_you_mean(unknown[0], cats)} Categories: {', '.join(map(str, cats))}."
                )
            concepts = [c for c in concepts if c.category in params.categories]
        if not params.distractors:
            concepts = [c for c in concepts if c.category != "distractor"]
        return ConceptList(concepts, f"builtin:{name}")

    return make


@hookimpl
def dissectkit_register_concept_sets(register: Register) -> None:
    register("text", lambda params, ctx: ConceptList(read_text(params.path), params.path), params=PathParams,
                 description="A text file, one concept per line.", licence=None)
    register("table", lambda params, ctx: ConceptList(read_table(params.path, params.column), params.path),
                 params=TableParams, description="CSV/YAML with concept, category, subcategory.", licence=None)
    register("mcd-workbook", lambda p, ctx: ConceptList(
                 read_workbook(p.path, p.duplicates, p.whitespace, p.order, p.concept_list), p.path),
                 params=WorkbookParams,
                 description="Excel workbook in the Mammo-CLIP Dissect layout (sheet = category).", licence=None)
    register("mammo-birads", _bundled("mammo_birads"), params=BundledParams,
                 description="BI-RADS mammography vocabulary, categorised, plus everyday distractor words.",
                 licence="Apache-2.0 (dissectkit)")
    register("cxr-findings", _bundled("cxr_findings"), params=BundledParams,
                 description="NIH ChestX-ray14 and CheXpert findings plus common report terms.",
                 licence="Apache-2.0 (dissectkit)")
