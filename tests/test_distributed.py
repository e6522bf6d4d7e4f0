"""Distributed extraction and labelling under torchrun (gloo, CPU): byte-identical to one process,
and a killed rank leaves only whole chunks that the next run resumes from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 400
OUTPUTS = ("labels.json", "neurons.csv", "neurons.json")
pytestmark = pytest.mark.slow


def _args(out: Path, chunk: int = 25, batch: int = 25) -> list[str]:
    return [
        "run", str(ROOT / "recipes" / "quickstart.yaml"), "--quiet",
        "--set", f"probe.params.n={N_IMAGES}",
        "--set", "output.reporters=[csv, json]",
        "--set", f"output.dir={out}",
        "--set", f"runtime.chunk_images={chunk}",
        "--set", f"runtime.batch_size={batch}",
        "--set", "runtime.threads=1",
        "--set", "runtime.device=cpu",
    ]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "DISSECTKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def _torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "dissectkit"]


def _outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUTS}


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The one-process run every distributed run is compared with."""
    tmp = tmp_path_factory.mktemp("single")
    done = subprocess.run([sys.executable, "-m", "dissectkit", *_args(tmp / "out")], env=_env(tmp / "cache"),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert _manifest(tmp / "out")["stats"]["processes"]["world_size"] == 1
    return tmp / "out"


def test_torchrun_two_ranks_is_byte_identical_to_one_process(single, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([*_torchrun(2), *_args(out)], env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert _outputs(out) == _outputs(single)
    stats = _manifest(out)["stats"]
    assert stats["processes"] == {"world_size": 2, "threads": 1}
    assert stats["chunks"] == {"computed": 16, "total": 16}  # shared out 8 + 8, summed for the manifest
    labels = json.loads((out / "labels.json").read_text())
    assert labels["probe_ids"][:2] == ["synth-0-000000", "synth-0-000001"] and len(labels["probe_ids"]) == N_IMAGES
    # both ranks wrote their chunks into the shared cache: every entry has all 16
    for entry in (tmp_path / "cache" / "acts").iterdir():
        assert len(list(entry.glob("chunk_*.safetensors"))) == 16


def _worker_pids(agent: int) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes (its children with a RANK in the environment)."""
    ranks = {}
    for task in Path(f"/proc/{agent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for var in env:
                if var.startswith(b"RANK="):
                    ranks[int(var[5:])] = int(pid)
    return ranks


def test_a_killed_rank_leaves_whole_chunks_and_the_rerun_resumes(single, tmp_path):
    from safetensors.torch import load_file

    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [*_torchrun(2), *_args(out)]
    proc = subprocess.Popen(args, env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    embeds = cache / "embeds"
    deadline, killed, done = time.time() + 600, False, 0
    while time.time() < deadline and proc.poll() is None:
        done = len(list(embeds.glob("*/chunk_*.safetensors"))) if embeds.exists() else 0
        if done >= 2:  # a chunk's embeddings are written last: some chunks are complete
            ranks = _worker_pids(proc.pid)
            if 1 in ranks:
                os.kill(ranks[1], signal.SIGKILL)
                killed = True
                break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert killed, "the run finished before a rank could be killed"
    assert proc.returncode != 0, err
    assert 2 <= done < 16
    for chunk in cache.glob("*/*/chunk_*.safetensors"):  # only whole chunks: each one loads
        assert set(load_file(str(chunk))) >= {"values", "valid"}

    resumed = subprocess.run(args, env=_env(cache), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    chunks = _manifest(out)["stats"]["chunks"]
    assert chunks["total"] == 16 and 0 < chunks["computed"] < 16
    assert _outputs(out) == _outputs(single)
