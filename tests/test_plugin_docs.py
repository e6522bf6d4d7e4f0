"""docs/plugins.md is the reference of the plugin contract: every hook, every member of every kind,
every registration field and every public name of ``dissectkit.plugin`` is documented there."""

from __future__ import annotations

import re
from pathlib import Path

import dissectkit.plugin as public
from dissectkit.base.contract import BASES
from dissectkit.host import hookspecs
from dissectkit.host.registry import SPEC_FIELDS

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def contract_names() -> dict[str, list[str]]:
    """What the reference must name, by group."""
    return {
        "hook": sorted(n for n in dir(hookspecs) if n.startswith("dissectkit_")),
        "member": sorted({m for base in BASES.values() for m in (*base.required, *base.optional)}),
        "registration field": sorted(SPEC_FIELDS),
        "public name": sorted(public.__all__),
    }


def undocumented(text: str) -> list[str]:
    """``group: name`` for each contract name that ``text`` never writes as code (`` `name` `` or
    `` `name(...`` or `` `name: ...``)."""
    quoted = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", text))
    return [f"{group}: {name}" for group, names in contract_names().items() for name in names if name not in quoted]


def test_every_hook_member_field_and_public_name_is_documented():
    assert undocumented(DOC.read_text()) == []


def test_the_check_fails_when_something_is_missing():
    text = DOC.read_text()
    assert "hook: dissectkit_run_finished" in undocumented(text.replace("`dissectkit_run_finished`", "run finished"))
    assert "registration field: has_masks" in undocumented(re.sub(r"`has_masks\b", "`masks", text))
    assert "member: uses_dissector" in undocumented(text.replace("`uses_dissector", "`uses the dissector"))


def test_every_kind_has_its_example_and_hookspec_docstrings_are_one_line():
    text = DOC.read_text()
    for base in BASES.values():
        assert f"`{base.__name__}`" in text
    for name in contract_names()["hook"]:
        doc = getattr(hookspecs, name).__doc__
        assert doc and "\n" not in doc.strip(), f"{name}: the hookspec docstring is one line; the reference is docs/plugins.md"
