"""`dissectkit plugin new`: the written distribution really installs (`pip install -e`) and its tests
pass (`pytest`), with every component registered through its entry point."""

from __future__ import annotations

import json

import pytest
from plugin_env import layered_venv, pip_install_editable, run_in

from dissectkit.cli.app import main
from dissectkit.cli.commands.plugin import parse_kinds
from dissectkit.pytest_plugin import dissectkit_plugin  # noqa: F401 - the fixture

ALL = ["concepts", "dissector", "method", "probe", "reporter", "similarity", "target"]


@pytest.mark.slow
def test_plugin_new_installs_and_its_tests_pass(tmp_path, capsys):
    dist = tmp_path / "demo"
    assert main(["plugin", "new", "demo", "--dir", str(dist)]) == 0
    assert "pip install -e" in capsys.readouterr().out
    assert (dist / "pyproject.toml").read_text().count('demo = "dissectkit_demo.plugin"') == 1
    python = layered_venv(tmp_path / "venv")
    installed = pip_install_editable(python, dist, tmp_path)
    assert installed.returncode == 0, installed.stderr
    # installed: discovered through its entry point, every component registered
    listed = run_in(python, ["-m", "dissectkit.cli", "plugins", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    record = next(r for r in json.loads(listed.stdout) if r["distribution"] == "dissectkit-demo")
    assert record["ok"] and record["components"] == [f"{k}:demo-{k}" for k in ALL]
    tests = run_in(python, ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(dist)], tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "8 passed" in tests.stdout


def test_plugin_new_with_some_kinds_and_bad_input(tmp_path, capsys):
    dist = tmp_path / "two"
    assert main(["plugin", "new", "two-words", "--kinds", "reporter,concepts", "--dir", str(dist)]) == 0
    files = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    assert files == ["README.md", "conftest.py", "dissectkit_two_words/__init__.py", "dissectkit_two_words/concepts.py",
                     "dissectkit_two_words/plugin.py", "dissectkit_two_words/reporter.py", "pyproject.toml",
                     "tests/test_components.py"]
    plugin = (dist / "dissectkit_two_words" / "plugin.py").read_text()
    assert "def dissectkit_register_concept_sets" in plugin and "def dissectkit_register_reporters" in plugin
    assert "dissectkit_register_methods" not in plugin
    capsys.readouterr()
    assert main(["plugin", "new", "two-words", "--dir", str(dist)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["plugin", "new", "Bad_Name", "--dir", str(tmp_path / "x")]) == 2
    assert "lower-case words" in capsys.readouterr().err
    assert parse_kinds(None) == ["dissector", "target", "probe", "concepts", "similarity", "method", "reporter"]
    assert parse_kinds(["method", "concepts,method"]) == ["concepts", "method"]


def test_generated_components_run_in_process(tmp_path, dissectkit_plugin):  # noqa: F811
    import importlib
    import sys

    dist = tmp_path / "inproc"
    assert main(["plugin", "new", "inproc", "--kinds", "concepts,method", "--dir", str(dist)]) == 0
    sys.path.insert(0, str(dist))
    try:
        importlib.invalidate_caches()
        record = dissectkit_plugin("dissectkit_inproc.plugin")
        assert record.components == ["concepts:inproc-concepts", "method:inproc-method"]
        from dissectkit import testing

        assert testing.check_method(__import__("dissectkit").create("method", "inproc-method"))["planted_top1"] == 1.0
    finally:
        sys.path.remove(str(dist))
        for name in [m for m in sys.modules if m.startswith("dissectkit_inproc")]:
            del sys.modules[name]
