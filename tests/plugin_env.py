"""A throwaway virtual environment layered on the running one, to really `pip install -e` a plugin
distribution (offline: no dependencies, no build isolation) without touching the shared environment.

Commands run here discover plugins through their entry points: ``DISSECTKIT_BUILTINS_ONLY``, which the
test session sets for itself (../conftest.py), is left out of their environment. They also see what the
running environment has installed, as a user's machine would."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import dissectkit
from dissectkit.host.manager import BUILTINS_ONLY_ENV


def layered_venv(root: Path) -> Path:
    """A venv at ``root`` that sees this interpreter's packages; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def env_with_this_dissectkit() -> dict[str, str]:
    """The environment, with this checkout's dissectkit first on the path and entry-point discovery on."""
    env = dict(os.environ)
    env.pop(BUILTINS_ONLY_ENV, None)
    src = str(Path(dissectkit.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_install_editable(python: Path, dist: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(dist)],
        capture_output=True, text=True, env=env_with_this_dissectkit(), cwd=cwd, timeout=300,
    )


def run_in(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=env_with_this_dissectkit(),
                          cwd=cwd, timeout=600)
