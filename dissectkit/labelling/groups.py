"""Synonym groups of a concept set (docs/methods.md, "Concept groups"): the groups file a recipe names
(``concepts: {..., groups: FILE}``, written by ``dissectkit concepts audit``), each concept's
``Concept.group``, and the readings at group level (accuracy, labels)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DataError
from dissectkit.base.types import Concept

__all__ = [
    "apply_groups",
    "group_accuracy",
    "group_names",
    "group_of_text",
    "read_groups",
    "write_groups",
]

HEADER = (
    "# Synonym groups of a concept set (dissectkit concepts audit). A recipe reads them with\n"
    "#   concepts: {name: ..., params: {...}, groups: <this file>}\n"
    "# Each group: its name (the label shown at group level) and its member concepts, exactly as the\n"
    "# concept set spells them. A concept in no group is a group of its own. Edit freely.\n"
)


def read_groups(path: str | Path) -> dict[str, str]:
    """``{member concept text: group name}`` from a groups file (YAML ``groups: {name: [members]}``);
    a malformed file or a concept in two groups is a ``DataError`` naming the file."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"Concept groups file not found: {p}. Check `concepts.groups` in the recipe "
                        "(`dissectkit concepts audit RECIPE` writes one).")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"Cannot parse the concept groups file {p}: {exc}") from None
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, dict):
        raise DataError(f"{p}: expected a mapping `groups: {{group name: [member concepts]}}`.")
    out: dict[str, str] = {}
    for name, members in groups.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise DataError(f"{p}: group {name!r} must list its member concepts as strings.")
        for m in members:
            if m in out and out[m] != str(name):
                raise DataError(f"{p}: concept {m!r} is in two groups ({out[m]!r} and {name!r}); keep it in one.")
            out[m] = str(name)
    return out


def write_groups(path: str | Path, groups: dict[str, list[str]], note: str = "") -> Path:
    """Write ``{group name: [member texts]}`` as a groups file (only groups of two or more members)."""
    import yaml

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump({"groups": {k: list(v) for k, v in groups.items() if len(v) > 1}},
                          sort_keys=False, allow_unicode=True, width=120)
    p.write_text(HEADER + (f"# {note}\n" if note else "") + body, encoding="utf-8")
    return p


def apply_groups(concepts: Sequence[Concept], mapping: dict[str, str], source: str = "groups") -> list[Concept]:
    """The concepts with ``group`` set from ``mapping`` (member text -> group name); members that are
    not in the concept set are named in one warning."""
    known = {c.text for c in concepts}
    missing = [m for m in mapping if m not in known]
    if missing:
        warnings.warn(f"{source}: {len(missing)} grouped concept(s) are not in the concept set (e.g. "
                      f"{missing[0]!r}); they are ignored.", stacklevel=2)
    return [replace(c, group=mapping.get(c.text)) for c in concepts]


def group_names(concepts: Iterable[Concept]) -> list[str] | None:
    """Each concept's group (its own text when it has none), or ``None`` when no concept has a group."""
    concepts = list(concepts)
    if not any(c.group for c in concepts):
        return None
    return [c.group or c.text for c in concepts]


def group_of_text(concepts: Iterable[Concept]) -> dict[str, str]:
    """``{concept text: group}`` (the text itself for a concept in no group)."""
    return {c.text: c.group or c.text for c in concepts}


def group_accuracy(labels: Any, truth: Sequence[str | None], concepts: Iterable[Concept]) -> dict[str, Any] | None:
    """Final-layer accuracy at group level over the neurons whose truth is known: ``top1_group`` (the
    first label lies in the truth's group), ``top5_group`` (one of the first five does) and ``n_group``;
    ``None`` when no concept has a group. A truth that is not in the set is a group of its own."""
    concepts = list(concepts)
    if group_names(concepts) is None:
        return None
    group = group_of_text(concepts)
    idx = [k for k, t in enumerate(truth) if t is not None]
    if not idx:
        return {"top1_group": None, "top5_group": None, "n_group": 0}
    top1 = top5 = 0
    for k in idx:
        want = group.get(truth[k], truth[k])
        ranked = [c for c, _ in labels.neurons[k]]
        top1 += bool(ranked) and group.get(ranked[0], ranked[0]) == want
        top5 += any(group.get(c, c) == want for c in ranked[:5])
    return {"top1_group": top1 / len(idx), "top5_group": top5 / len(idx), "n_group": len(idx)}
