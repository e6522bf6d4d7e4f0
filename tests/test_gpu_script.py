"""benchmarks/gpu.sh, the GPU figures' script, runs end to end on the CPU (``--device cpu --quick``):
the script a developer lent a GPU runs in one call stays working without one (issue 22). No timing
is asserted; only that every step ran and printed its figures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_script_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--n", "120", "--python", sys.executable],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:] + out[-3000:]
    assert "== device cpu" in out
    row = re.search(r"^\s*120\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.MULTILINE)
    assert row is not None, out  # limit.py's row: extraction, bare loop, forward
    assert re.search(r"^cold: wall [\d.]+ s = \d+ images/s", out, re.MULTILINE), out
    assert re.search(r"^warm: wall [\d.]+ s = \d+ images/s", out, re.MULTILINE), out
    assert "(a) labelling" in out and "(b) Network Dissection" in out and "report / total" in out
    assert "== gpu.sh done" in out
    assert list(tmp_path.glob("dk-gpu-*")) == []  # its scratch folder is removed


def test_gpu_script_names_a_wrong_device():
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    done = subprocess.run(["bash", str(SCRIPT), "--device", "tpu"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--device must be cuda, cuda:N or cpu (got 'tpu')" in done.stderr
