"""Concept-set loaders: plain text, CSV/YAML tables, Mammo-CLIP Dissect-style workbooks, bundled sets."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DataError
from dissectkit.base.types import Concept

DATA_DIR = Path(__file__).parent / "data"


def dedupe(concepts: Iterable[Concept], source: str) -> list[Concept]:
    """Drop blank and repeated concept texts (first kept, order kept) with one warning; empty -> DataError."""
    out: list[Concept] = []
    seen: set[str] = set()
    blank = dup = 0
    for c in concepts:
        text = c.text.strip()
        if not text:
            blank += 1
            continue
        if text in seen:
            dup += 1
            continue
        seen.add(text)
        out.append(Concept(text, c.category, c.subcategory))
    if dup:
        warnings.warn(f"{source}: dropped {dup} duplicate concept(s); the first occurrence of each is kept.", stacklevel=3)
    if not out:
        raise DataError(f"Concept source {source} holds no concepts ({blank} blank, {dup} duplicate entries).")
    return out


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"Concept file not found: {p}. Check `path` in the concepts params.")
    return p


def read_text(path: str | Path) -> list[Concept]:
    """One concept per line; blank lines and duplicates dropped (order kept)."""
    p = _existing(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"Concept file {p} is not UTF-8 text: {exc}") from None
    return dedupe((Concept(ln) for ln in lines), str(p))


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_table(path: str | Path, column: str = "concept") -> list[Concept]:
    """CSV (columns ``concept``, optional ``category``, ``subcategory``) or YAML: a list of rows with
    those keys, a list of strings, or a nested mapping ``category -> subcategory -> [concepts]``."""
    p = _existing(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise DataError(f"Cannot parse YAML concept file {p}: {exc}") from None
        return dedupe(_from_yaml(data, p, column), str(p))
    from dissectkit.imaging.files import read_csv

    rows = read_csv(p, [column]).records()
    return dedupe(
        (Concept(r[column], _cell(r.get("category")), _cell(r.get("subcategory"))) for r in rows), str(p)
    )


def _from_yaml(data: Any, p: Path, column: str) -> list[Concept]:
    if isinstance(data, dict) and "concepts" in data and len(data) <= 3:
        data = data["concepts"]
    out: list[Concept] = []
    if isinstance(data, list):
        for i, row in enumerate(data):
            if isinstance(row, str):
                out.append(Concept(row))
            elif isinstance(row, dict) and column in row:
                out.append(Concept(str(row[column]), _cell(row.get("category")), _cell(row.get("subcategory"))))
            else:
                raise DataError(f"{p}: entry {i} must be a string or a mapping with a {column!r} key (got {row!r}).")
        return out
    if isinstance(data, dict):
        for category, body in data.items():
            if isinstance(body, list):
                out.extend(Concept(str(t), str(category)) for t in body)
            elif isinstance(body, dict):
                for sub, terms in body.items():
                    if not isinstance(terms, list):
                        raise DataError(f"{p}: {category}/{sub} must be a list of concepts.")
                    out.extend(Concept(str(t), str(category), str(sub)) for t in terms)
            else:
                raise DataError(f"{p}: category {category!r} must map to a list or to sub-categories.")
        return out
    raise DataError(f"{p}: expected a list of concepts or a mapping category -> [concepts], got {type(data).__name__}.")


def workbook_listings(path: str | Path, whitespace: str = "keep") -> list[tuple[str, str, str | None]]:
    """Every ``(concept, sheet, header)`` listing of a workbook in the Mammo-CLIP Dissect layout,
    column by column as the published lookup is filled, repeats included (``whitespace``: ``strip``
    strips texts, sheet titles and headers; otherwise they are kept as written). ``dissectkit
    concepts audit`` reads them too."""
    p = _existing(path)
    from openpyxl import load_workbook

    try:
        wb = load_workbook(p, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"Cannot open workbook {p}: {exc}") from None

    def cell(value: Any) -> str | None:
        if value is None or not str(value).strip():
            return None
        return str(value).strip() if whitespace == "strip" else str(value)

    out: list[tuple[str, str, str | None]] = []
    for ws in wb.worksheets:
        rows = list(ws.iter_rows(values_only=True))
        if not rows:
            continue
        sheet = ws.title.strip() if whitespace == "strip" else ws.title
        headers = [cell(h) for h in rows[0]]
        for j, header in enumerate(headers):
            for row in rows[1:]:
                text = cell(row[j]) if j < len(row) else None
                if text:
                    out.append((text, sheet, header))
    wb.close()
    return out


def read_workbook(path: str | Path, duplicates: str = "last", whitespace: str = "keep", order: str = "workbook",
                  concept_list: str | Path | None = None) -> list[Concept]:
    """The Mammo-CLIP Dissect layout (one sheet per broad category, row 1 = sub-category headers),
    resolved as the published analysis does (docs/study.md, "The concept workbook").

    ``whitespace``: ``keep`` (texts, sheet titles and headers as the workbook has them), ``strip``, or
    ``published``: as ``keep``, but the variants of one concept that differ only in leading / trailing
    spaces are one concept - the variant without them when it is listed, else the first listed - with
    the category the published lookup gives that text (its own last listing). ``order``: ``workbook``
    (first listing) or ``sorted`` (Python's string order, as the published sorted list).
    ``concept_list``: the user's copy of the published concept list (one concept per line, read as
    published: split on newlines, empty lines dropped, spaces kept): the set is exactly its concepts,
    each with the lookup's category."""
    p = Path(path).expanduser()
    lookup: dict[str, tuple[str, str | None]] = {}  # the published lookup: text -> (sheet, header)
    first: dict[str, None] = {}  # insertion order = first position
    listings: dict[str, int] = {}
    for text, sheet, header in workbook_listings(path, whitespace):
        listings[text] = listings.get(text, 0) + 1
        first.setdefault(text, None)
        if text not in lookup or duplicates == "last":
            lookup[text] = (sheet, header)
    several = [t for t, n in listings.items() if n > 1]
    if several:
        warnings.warn(
            f"{p}: {len(several)} concept(s) are listed more than once (e.g. {several[0]!r}); each is kept once "
            f"with the category of its {duplicates} listing.", stacklevel=2)
    texts = list(first)
    if whitespace == "published":
        texts = _merge_whitespace_variants(texts, p)
    if concept_list is not None:
        texts = _published_list(concept_list, lookup, p)
    if not texts:
        raise DataError(f"Concept source {p} holds no concepts.")
    if order == "sorted":
        texts = sorted(texts)
    return [Concept(t, *lookup.get(t, (None, None))) for t in texts]


def _merge_whitespace_variants(texts: list[str], source: Path) -> list[str]:
    """One text per concept up to leading / trailing spaces: the variant without them when listed,
    else the first listed (at the first position of any variant)."""
    variants: dict[str, list[str]] = {}
    for t in texts:
        variants.setdefault(t.strip(), []).append(t)
    kept, dropped = [], []
    for bare, group in variants.items():
        chosen = bare if bare in group else group[0]
        kept.append(chosen)
        dropped += [t for t in group if t != chosen]
    if dropped:
        warnings.warn(
            f"{source}: {len(dropped)} concept(s) differ from another only in leading / trailing spaces and are "
            f"merged into it (as the published concept list has them): {', '.join(map(repr, dropped[:5]))}.", stacklevel=3)
    return kept


def _published_list(path: str | Path, lookup: dict[str, tuple[str, str | None]], workbook: Path) -> list[str]:
    """The concepts of a published concept-list file, read as the published code reads it."""
    p = _existing(path)
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"Concept list {p} is not UTF-8 text: {exc}") from None
    texts = list(dict.fromkeys(line.removesuffix("\r") for line in raw.split("\n") if line.removesuffix("\r") != ""))
    missing = [t for t in texts if t not in lookup]
    unlisted = [t for t in lookup if t not in set(texts)]
    if missing:
        warnings.warn(f"{p}: {len(missing)} concept(s) of the list are not in {workbook.name} and have no category: "
                      f"{', '.join(map(repr, missing[:5]))}.", stacklevel=3)
    if unlisted:
        warnings.warn(f"{workbook}: {len(unlisted)} text(s) of the workbook are not in the list {p.name} and are left "
                      f"out: {', '.join(map(repr, unlisted[:5]))}.", stacklevel=3)
    return texts


def bundled(name: str) -> list[Concept]:
    """A first-party set shipped as YAML under ``builtin/concepts/data``."""
    return read_table(DATA_DIR / f"{name}.yaml")
