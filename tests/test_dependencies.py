"""Runtime dependencies: every third-party module the package (and each first-party plugin) imports
belongs to a distribution named in its [project].dependencies, or to an optional extra whose absence
gives a clear error naming that extra."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from dissectkit.base.errors import DataError

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
# module -> the extra that provides it (its use must catch ImportError and name the extra)
OPTIONAL = {"spacy": "reports", "sentence_transformers": "mpnet"}
# files only pytest itself loads (the `pytest11` entry point), so pytest is there when they run
PYTEST_ONLY = {"dissectkit/pytest_plugin.py"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(pyproject: Path) -> set[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in deps}


def _third_party_imports(package: Path) -> dict[str, str]:
    """Top-level module -> first file importing it, over every .py file of ``package``."""
    found: dict[str, str] = {}
    for py in sorted(package.rglob("*.py")):
        if str(py.relative_to(ROOT)) in PYTEST_ONLY:
            continue
        for node in ast.walk(ast.parse(py.read_text(), str(py))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, str(py.relative_to(ROOT)))
    return found


PACKAGES = [
    (ROOT / "dissectkit", ROOT / "pyproject.toml", {"dissectkit"}),
    (ROOT / "plugins/dissectkit-mammoclip/dissectkit_mammoclip", ROOT / "plugins/dissectkit-mammoclip/pyproject.toml",
     {"dissectkit", "dissectkit_mammoclip"}),
    (ROOT / "plugins/dissectkit-medclip/dissectkit_medclip", ROOT / "plugins/dissectkit-medclip/pyproject.toml",
     {"dissectkit", "dissectkit_medclip"}),
]


@pytest.mark.parametrize(("package", "pyproject", "own"), PACKAGES, ids=lambda v: v.name if isinstance(v, Path) else "")
def test_every_runtime_import_is_a_declared_dependency(package, pyproject, own):
    declared = _requirements(pyproject)
    if "dissectkit" in declared:  # a plugin may use what dissectkit itself requires
        declared |= _requirements(ROOT / "pyproject.toml")
    dists = metadata.packages_distributions()
    missing = []
    for module, where in _third_party_imports(package).items():
        if module in own or module in OPTIONAL:
            continue
        names = {_norm(d) for d in dists.get(module, [module])}
        if not names & declared:
            missing.append(f"{module} ({where}; distribution {', '.join(sorted(names))})")
    assert not missing, f"imported at run time but not in {pyproject.relative_to(ROOT)} [project].dependencies: {missing}"


def test_pytest_only_files_are_the_pytest11_entry_points():
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    assert {m.replace(".", "/") + ".py" for m in entry_points.values()} == PYTEST_ONLY


def test_pandas_is_not_needed_at_run_time():
    assert "pandas" not in _third_party_imports(ROOT / "dissectkit")


def test_optional_extras_exist_and_are_named_in_their_errors():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, extra in OPTIONAL.items():
        assert any(_norm(module) == _norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in extras[extra])


def test_missing_spacy_names_the_reports_extra_and_exits_2(monkeypatch, tmp_path, capsys):
    from dissectkit.builtin.concepts import reports
    from dissectkit.cli.app import main

    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    reports._spacy.cache_clear()
    try:
        with pytest.raises(DataError, match=r"pip install 'dissectkit\[reports\]'"):
            reports.get_tagger("spacy")
        (tmp_path / "r.txt").write_text("A spiculated mass.\n")
        code = main(["concepts", "from-reports", str(tmp_path / "r.txt"), str(tmp_path / "c.txt"), "--tagger", "spacy"])
        assert code == 2 and "dissectkit[reports]" in capsys.readouterr().err.replace("\n", "")
    finally:
        reports._spacy.cache_clear()
