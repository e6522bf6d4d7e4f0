"""The shape of the code: the import-linter contracts hold (layers, no cycles, plugins use the
public API only), at most ten top-level modules, no module imports another module's private name."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
needs_lint = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")


def lint(config: Path, cwd: Path, pythonpath: list[Path] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([LINT, "--no-cache", "--config", str(config)], capture_output=True, text=True, cwd=cwd, env=env)


@needs_lint
def test_the_import_contracts_are_kept():
    out = lint(ROOT / ".importlinter", ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout and out.stdout.count("KEPT") == 3


TEMPLATE_CONTRACT = """
[importlinter]
root_packages =
    dissectkit
    {package}
include_external_packages = False

[importlinter:contract:public-api]
name = the generated plugin imports dissectkit.plugin only
type = protected
protected_modules =
{protected}
allowed_importers =
    dissectkit
"""


def _template_config(tmp_path: Path, package: str) -> Path:
    protected = "\n".join(
        f"    dissectkit.{p.name}" for p in sorted((ROOT / "dissectkit").iterdir()) if p.is_dir() and (p / "__init__.py").exists()
    )
    config = tmp_path / "contracts.ini"
    config.write_text(TEMPLATE_CONTRACT.format(package=package, protected=protected))
    return config


@needs_lint
def test_a_generated_plugin_imports_only_the_public_api(tmp_path):
    from dissectkit.cli.commands.plugin import write_plugin

    write_plugin("layout-check", ["dissector", "target", "probe", "concepts", "similarity", "method", "reporter"], tmp_path / "dist")
    config = _template_config(tmp_path, "dissectkit_layout_check")
    out = lint(config, tmp_path, [tmp_path / "dist"])
    assert out.returncode == 0, out.stdout[-3000:]
    # the contract can fail: one private import breaks it
    probe = tmp_path / "dist" / "dissectkit_layout_check" / "probe.py"
    probe.write_text(probe.read_text() + "\nfrom dissectkit.imaging.files import FileProbe as _Private  # noqa\n")
    broken = lint(config, tmp_path, [tmp_path / "dist"])
    assert broken.returncode != 0 and "dissectkit_layout_check.probe -> dissectkit.imaging.files" in broken.stdout


def test_at_most_ten_top_level_modules():
    modules = sorted(p.name for p in (ROOT / "dissectkit").glob("*.py"))
    assert len(modules) <= 10, modules


def private_imports(roots: list[Path]) -> list[str]:
    """``file: from module import _name`` for every import of another module's private name."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith("dissectkit"):
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            found.append(f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}")
    return found


def test_no_module_imports_another_modules_private_name():
    assert private_imports([ROOT / "dissectkit", *sorted((ROOT / "plugins").glob("dissectkit-*/dissectkit_*"))]) == []


MYPY = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")


@pytest.mark.slow
@pytest.mark.skipif(MYPY is None, reason="mypy is not installed (pip install -e '.[test]')")
def test_the_public_api_type_checks_strictly(tmp_path):
    """mypy --strict on dissectkit.plugin and every module whose names it exports ([tool.mypy])."""
    out = subprocess.run([MYPY, "--cache-dir", str(tmp_path / "mypy")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "Success: no issues found" in out.stdout


def test_the_type_checked_files_cover_every_module_dissectkit_plugin_exports_from():
    import re

    import tomllib

    files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"]
    sources = re.findall(r"^from (dissectkit\.[\w.]+) import", (ROOT / "dissectkit" / "plugin.py").read_text(), re.M)
    for module in sources:
        path = module.replace(".", "/")
        assert f"{path}.py" in files or any(path.startswith(f + "/") for f in files), f"{module} is not type-checked"
