"""What a user has installed cannot break the test suite (issue 18): the session's host is built from
the built-ins only, discovery tests see only their own distributions, and the suite passes with the
project's own tensorboard plugin and third-party plugins (tests/foreign_plugins) installed. The README's
set-up commands are the ones CI runs, and the test command installs every first-party plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from plugin_env import layered_venv, pip_install_editable, run_in

ROOT = Path(__file__).resolve().parents[1]
FOREIGN = Path(__file__).resolve().parent / "foreign_plugins"
# the first-party plugin's own tests and the files that broke when a plugin was installed (issue 18); the
# plugin first: its folder's conftest.py would otherwise be the `conftest` that tests/ import helpers from
REPRESENTATIVE = ["plugins/dissectkit-tensorboard/tests", "tests/test_cli.py", "tests/test_imaging.py",
                  "tests/test_plugins.py", "tests/test_startup.py", "tests/test_suite_isolation.py"]


def _installed_records(host) -> list:
    return [r for r in host.records if r.distribution not in ("dissectkit", "in-process")]


def test_the_session_host_has_the_builtins_only_and_subprocesses_inherit_it():
    from dissectkit.host.manager import BUILTINS_ONLY_ENV, get_host

    assert os.environ.get(BUILTINS_ONLY_ENV) == "1"  # set by the root conftest.py
    host = get_host()
    assert [r.name for r in _installed_records(host)] == []
    assert all(r.name.startswith("builtin:") for r in host.records if r.distribution == "dissectkit")
    listed = subprocess.run([sys.executable, "-m", "dissectkit.cli", "plugins", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert {r["distribution"] for r in json.loads(listed.stdout)} == {"dissectkit"}


def test_plugin_site_discovers_its_own_distributions_and_nothing_else(plugin_site):
    from dissectkit.host.manager import Host

    (plugin_site / "dk_site_words").mkdir()
    (plugin_site / "dk_site_words" / "__init__.py").write_text(textwrap.dedent("""
        from dissectkit.plugin import hookimpl

        @hookimpl
        def dissectkit_register_concept_sets(register):
            register("site-words", lambda params, ctx: None, description="from the site")
    """))
    info = plugin_site / "dissectkit_site_words-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dissectkit-site-words\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dissectkit]\nsite-words = dk_site_words\n")
    records = _installed_records(Host())
    assert [(r.distribution, r.ok, r.components) for r in records] == [
        ("dissectkit-site-words", True, ["concepts:site-words"])]


def _readme_set_up_commands() -> list[str]:
    """The commands of the README's "Set up" section that make a virtual environment, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()]
    return [line for line in lines if line.startswith("python3 -m venv ")]


def test_ci_runs_the_readme_set_up_commands_and_they_install_every_first_party_plugin():
    quickstart, tests = _readme_set_up_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quickstart in ci and tests in ci, "`.ci/run` must run the README's set-up commands as written"
    assert ci.index(quickstart) < ci.index(tests)
    assert tests.endswith("&& .venv/bin/python -m pytest -q")  # CI: the full suite
    plugins = sorted(p.parent.name for p in (ROOT / "plugins").glob("*/pyproject.toml"))
    assert plugins and sorted(re.findall(r"-e plugins/([\w.-]+)", tests)) == plugins
    assert '.venv/bin/python -m pytest -q -m "not slow"' in (ROOT / "README.md").read_text()  # the fast lane


@pytest.mark.slow
def test_installed_foreign_and_first_party_plugins_break_no_test(tmp_path):
    """The project's tensorboard plugin and two third-party distributions (a similarity; an import
    that fails) really installed, discovered when the switch is off, and the files they broke pass."""
    pytest.importorskip("tensorboard", reason="install the tensorboard plugin's dependency: pip install tensorboard")
    python = layered_venv(tmp_path / "venv")
    for dist in (FOREIGN / "dissectkit-acme-similarity", FOREIGN / "dissectkit-acme-broken"):
        shutil.copytree(dist, tmp_path / dist.name)  # build files stay out of the repository
        installed = pip_install_editable(python, tmp_path / dist.name, tmp_path)
        assert installed.returncode == 0, installed.stderr
    installed = pip_install_editable(python, ROOT / "plugins" / "dissectkit-tensorboard", tmp_path)
    assert installed.returncode == 0, installed.stderr
    listed = run_in(python, ["-m", "dissectkit.cli", "plugins", "--json"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    records = {r["distribution"]: r for r in json.loads(listed.stdout)}
    assert records["dissectkit-acme-similarity"]["ok"]
    assert records["dissectkit-acme-similarity"]["components"] == ["similarity:acme-dot"]
    assert not records["dissectkit-acme-broken"]["ok"]
    assert "acme_module_that_is_not_installed" in records["dissectkit-acme-broken"]["error"]
    assert records["dissectkit-tensorboard"]["ok"]
    ran = run_in(python, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "--rootdir", str(ROOT),
                          f"--basetemp={tmp_path / 'pytest'}", *REPRESENTATIVE], ROOT)
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-2000:]
    assert re.search(r"\d+ passed", ran.stdout) and "failed" not in ran.stdout.splitlines()[-1]
