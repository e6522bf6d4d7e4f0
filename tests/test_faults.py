"""Fault injection (issue 19), part 1: damaged cache files, run directories under concurrency, mount
points, full disks and signals. Each test asserts the exit code, that the message names the file /
field / plugin and the fix, that no compute started where none had to, and that no earlier result
was lost. Recipes, plugins and docs: tests/test_faults_inputs.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support import tiny_recipe

from dissectkit.cli.app import main
from dissectkit.engine import cache as cache_mod
from dissectkit.engine import rundir


@pytest.fixture
def recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file) -> Path:
    return tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)


def _run(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).replace("\n", " ")


def _labels(out: Path) -> list:
    return json.loads((out / "labels.json").read_text())["label_sets"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _chunks(cache: Path, kind: str = "acts") -> list[Path]:
    return sorted(cache.glob(f"{kind}/*/chunk_*.safetensors"))


# --------------------------------------------------------------------------- a cache that cannot lie
def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "a flipped byte in the data": lambda p: _flip(p, p.stat().st_size - 7),
    "a flipped byte in the metadata": lambda p: _flip(p, p.read_bytes().index(b"skipped") + 2),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "zero bytes": lambda p: p.write_bytes(b""),
    "a damaged header": lambda p: p.write_bytes(b"\xff" * 8 + p.read_bytes()[8:]),
    "a file dissectkit did not write": lambda p: _foreign(p),
}


def _foreign(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path))  # a valid safetensors file, without dissectkit's checksum


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_chunk_is_found_moved_aside_and_computed_again(recipe, tmp_path, capsys, damage):
    cache = tmp_path / "cache"
    args = ["run", str(recipe), "-q", "-s", f"runtime.cache_dir={cache}"]
    assert main(args) == 0
    clean = _labels(tmp_path / "out")
    chunk = _chunks(cache)[1]
    before = chunk.read_bytes()
    DAMAGE[damage](chunk)
    # cache verify finds it first (exit 1 naming the file), and moves nothing without --repair
    code, text = _run(capsys, "cache", "verify", "--cache-dir", str(cache))
    assert code == 1 and chunk.name in text and chunk.parent.name in text and "--repair" in text
    assert chunk.exists()
    code, text = _run(capsys, *args)
    assert code == 0 and text.count("failed its check") == 1 and chunk.name in text and chunk.parent.name in text
    assert _labels(tmp_path / "out") == clean  # the run's results equal a clean run's
    assert chunk.read_bytes() == before  # computed again, byte for byte
    aside = list((cache / "quarantine" / "acts" / chunk.parent.name).iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(chunk.name)  # moved aside, never deleted
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["stats"]["chunks"]["computed"] == 1
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0


def test_cache_verify_repair_moves_damage_aside_and_removes_orphan_temporaries(recipe, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["run", str(recipe), "-q", "-s", f"runtime.cache_dir={cache}"]) == 0
    chunk = _chunks(cache, "embeds")[0]
    _flip(chunk, chunk.stat().st_size - 3)
    orphan = chunk.parent / f".{chunk.name}.{os.uname().nodename}.999999999.tmp"
    orphan.write_bytes(b"half")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    code, text = _run(capsys, "cache", "verify", "--cache-dir", str(cache), "--repair")
    assert code == 0 and "checksum mismatch" in text and "moved aside" in text and "orphan temporary" in text
    assert not chunk.exists() and not orphan.exists()
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0


def test_a_truncated_text_cache_and_cards_file_are_recomputed(recipe, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["run", str(recipe), "-q", "-s", f"runtime.cache_dir={cache}", "-s", "output.reporters=[csv, html]"]
    assert main(args) == 0
    clean = _labels(tmp_path / "out")
    texts = sorted(cache.glob("texts/*/embeddings.safetensors"))
    cards = sorted(cache.glob("observed/*/observation"))
    assert texts and cards
    for path in (texts[0], cards[0]):
        path.write_bytes(path.read_bytes()[:100])
    code, text = _run(capsys, *args)
    assert code == 0 and text.count("failed its check") == 2
    assert "embeddings.safetensors" in text and "observation" in text and "Traceback" not in text
    assert _labels(tmp_path / "out") == clean and (tmp_path / "out" / "report.html").is_file()


def test_a_full_cache_disk_leaves_no_temporary_file_and_old_ones_are_cleaned(recipe, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    args = ["run", str(recipe), "-q", "-s", f"runtime.cache_dir={cache}"]
    real_fsync = os.fsync
    calls = {"n": 0}

    def full(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # a few chunk files in, the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(cache_mod.os, "fsync", full)
    code, text = _run(capsys, *args)
    assert code == 2 and "No space left on device" in text and "free some space" in text
    assert not list(cache.rglob("*.tmp"))  # the write that failed removed its temporary file
    assert not (tmp_path / "out").exists()  # nothing published
    monkeypatch.setattr(cache_mod.os, "fsync", real_fsync)
    # a temporary left by a killed writer (its pid is gone) is removed when the entry is next opened
    entry = sorted(p for p in cache.glob("acts/*") if p.is_dir())[0]
    orphan = entry / f".chunk_000009.safetensors.{os.uname().nodename}.999999999.tmp"
    orphan.write_bytes(b"x")
    assert main(args) == 0 and not orphan.exists()


# --------------------------------------------------------------------------- run directories
HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dissectkit.engine.rundir import RunLock
    lock = RunLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
""")


def _hold_lock(out: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_into_the_same_directory_stops_at_once_naming_the_first(recipe, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = ["run", str(recipe), "-q", "-s", f"runtime.cache_dir={cache}"]
    assert main(args) == 0
    before = _snapshot(tmp_path / "out")
    holder = _hold_lock(tmp_path / "out", 60)
    try:
        fresh = tmp_path / "cache-2"
        code, text = _run(capsys, "run", str(recipe), "-q", "-s", f"runtime.cache_dir={fresh}")
        assert code == 2 and f"PID {holder.pid}" in text and "--wait" in text and "--out" in text
        assert not _chunks(fresh)  # stopped before any compute
        assert _snapshot(tmp_path / "out") == before  # nothing of the first lost
    finally:
        holder.kill()
        holder.wait()
    holder = _hold_lock(tmp_path / "out", 1.0)  # --wait: starts when the other run is done
    code, text = _run(capsys, *args, "--wait")
    holder.wait()
    assert code == 0 and "Waiting for the run" in text and f"PID {holder.pid}" in text
    assert not list(tmp_path.glob(".out.*"))  # no lock, staging or previous run left beside it


def _cli_run(tmp_path: Path, tiny_openclip_dir: Path, concepts_file: Path) -> tuple[list[str], dict[str, str]]:
    """``dissectkit run`` of a 60-image recipe in a child process, with its own cache."""
    from support import write_images

    images = tmp_path / "many"
    write_images(images, 60)
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, images, concepts_file)
    env = {**os.environ, "DISSECTKIT_CACHE": str(tmp_path / "cache")}
    return [sys.executable, "-m", "dissectkit.cli", "run", str(recipe), "-q", "-s", "runtime.chunk_images=10"], env


@pytest.mark.slow
def test_two_real_runs_into_one_directory_one_completes_the_other_exits_2(tmp_path, tiny_openclip_dir, concepts_file):
    cmd, env = _cli_run(tmp_path, tiny_openclip_dir, concepts_file)
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / ".out.lock").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out, err = first.communicate()
    assert first.returncode == 0, err
    assert second.returncode == 2 and f"PID {first.pid}" in second.stderr.replace("\n", " ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.json", "manifest.json", "neurons.csv",
                                                                    "neurons.json", "recipe.yaml"]


def test_a_users_file_in_a_run_directory_survives_a_rerun_and_is_named(recipe, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(recipe), "-q"]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "figures").mkdir()
    (out / "figures" / "f.png").write_bytes(b"png")
    code, text = _run(capsys, "run", str(recipe), "-q", "-s", "output.reporters=[json]")
    assert code == 0 and "Kept in" in text and "notes.txt" in text and "figures" in text
    assert (out / "notes.txt").read_text() == "mine" and (out / "figures" / "f.png").read_bytes() == b"png"
    assert not (out / "neurons.csv").exists()  # the previous run's own file is replaced (gone: not written again)
    assert sorted(json.loads((out / "manifest.json").read_text())["files"]) == ["labels.json", "manifest.json",
                                                                               "neurons.json", "recipe.yaml"]
    assert not list(tmp_path.glob(".out.*"))


def test_kill_9_during_a_commit_is_recovered_at_the_next_start(recipe, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(recipe), "-q"]) == 0
    before = _snapshot(out)
    (out / "notes.txt").write_text("mine")
    # as if killed between "previous run moved aside" and "new run in place"
    os.replace(out, tmp_path / ".out.old-999999999")
    (tmp_path / ".out.partial-999999998").mkdir()
    done = rundir.recover(out)
    assert _snapshot(out) == {**before, "notes.txt": b"mine"} and len(done) == 2
    assert not list(tmp_path.glob(".out.*"))
    # killed after the swap, before the user's file came over: it is carried into the new run
    shadow = tmp_path / ".out.old-999999997"
    shadow.mkdir()
    (shadow / "manifest.json").write_text(json.dumps({"files": ["labels.json", "manifest.json"]}))
    (shadow / "thesis.tex").write_text("precious")
    rundir.recover(out)
    assert (out / "thesis.tex").read_text() == "precious" and not shadow.exists()


@pytest.mark.parametrize("code", [errno.EBUSY, errno.EXDEV])
def test_an_output_directory_that_cannot_be_renamed_is_written_inside(recipe, tmp_path, capsys, monkeypatch, code):
    out = tmp_path / "out"
    assert main(["run", str(recipe), "-q"]) == 0
    (out / "notes.txt").write_text("mine")
    real = os.replace

    def refuse(src, dst, *a, **k):  # a mount point (Docker / Kubernetes volume): it cannot be renamed
        if Path(src) == out or Path(dst) == out:
            raise OSError(code, os.strerror(code), str(src))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(rundir.os, "replace", refuse)
    code_, text = _run(capsys, "run", str(recipe), "-q", "-s", "output.reporters=[json]")
    assert code_ == 0 and "Results written to" in text
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "manifest.json", "neurons.json", "notes.txt", "recipe.yaml"]
    assert json.loads((out / "manifest.json").read_text())["files"] == ["labels.json", "manifest.json", "neurons.json", "recipe.yaml"]
    assert not list(tmp_path.glob(".out.*"))


def _mounted(folder: Path) -> bool:
    folder.mkdir()
    if os.geteuid() != 0:
        return False
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(folder)], capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


def test_a_run_whose_output_directory_is_a_mount_point_completes(recipe, tmp_path, capsys):
    mnt = tmp_path / "volume"
    if not _mounted(mnt):
        pytest.skip("mounting a tmpfs is not permitted here (needs root); the EBUSY test covers the same path")
    try:
        (mnt / "lost+found").mkdir()
        code, text = _run(capsys, "run", str(recipe), "-q", "--out", str(mnt))
        assert code == 0 and (mnt / "labels.json").is_file() and (mnt / "neurons.csv").is_file()
        (mnt / "notes.txt").write_text("mine")
        code, text = _run(capsys, "run", str(recipe), "-q", "--out", str(mnt), "-s", "output.reporters=[json]")
        assert code == 0 and (mnt / "notes.txt").read_text() == "mine" and not (mnt / "neurons.csv").exists()
        assert sorted(p.name for p in mnt.iterdir()) == ["labels.json", "lost+found", "manifest.json", "neurons.json",
                                                          "notes.txt", "recipe.yaml"]
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, text = _run(capsys, "run", str(recipe), "-q", "--out", str(mnt), "-s", f"runtime.cache_dir={tmp_path / 'c'}")
        assert code == 2 and "not writable" in text and str(mnt) in text and not _chunks(tmp_path / "c")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _failing_html(monkeypatch, action):
    """The html reporter writes part of its report, then ``action()`` (a full disk, SIGTERM)."""
    import dissectkit.report.html

    def write(run, out_dir, *args, **kwargs):
        (Path(out_dir) / "report.html").write_text("<html>half")
        action()

    monkeypatch.setattr(dissectkit.report.html, "write_html_report", write)


def test_a_full_disk_during_the_report_leaves_the_previous_run_untouched(recipe, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["run", str(recipe), "-q", "-s", "output.reporters=[csv, html]"]) == 0
    before = _snapshot(out)

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "report_files"))

    _failing_html(monkeypatch, full)
    code, text = _run(capsys, "run", str(recipe), "-q", "-s", "output.reporters=[csv, html]", "-s", "method.params.top_m=3")
    assert code == 2 and "No space left on device" in text and "free some space" in text
    assert f"The previous run in {out} is untouched" in text and f"{out}.incomplete" in text
    assert _snapshot(out) == before  # complete and readable
    kept = json.loads((tmp_path / "out.incomplete" / "manifest.json").read_text())
    assert "No space left" in kept["incomplete"] and (tmp_path / "out.incomplete" / "labels.json").is_file()
    assert not list(tmp_path.glob(".out.*"))


def test_sigterm_during_the_report_is_handled_as_ctrl_c(recipe, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["run", str(recipe), "-q", "-s", "output.reporters=[csv, html]"]) == 0
    before = _snapshot(out)
    _failing_html(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    code, text = _run(capsys, "run", str(recipe), "-q", "-s", "output.reporters=[csv, html]", "-s", "method.params.top_m=3")
    assert code == 143 and "Terminated (SIGTERM)" in text and "previous results there are untouched" in text
    assert "Resume with the same command" in text
    assert _snapshot(out) == before and not list(tmp_path.glob(".out.*"))
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or callable(signal.getsignal(signal.SIGTERM))


@pytest.mark.slow
def test_sigterm_from_outside_stops_a_run_and_leaves_nothing_behind(tmp_path, tiny_openclip_dir, concepts_file):
    cmd, env = _cli_run(tmp_path, tiny_openclip_dir, concepts_file)
    proc = subprocess.Popen([*cmd, "-s", "runtime.batch_size=5"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    embeds = tmp_path / "cache" / "embeds"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if embeds.exists() and list(embeds.glob("*/chunk_*.safetensors")):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    _, err = proc.communicate()
    assert proc.returncode == 143, err
    assert "Terminated (SIGTERM)" in err and "Kept:" in err and "Resume with the same command" in err
    assert not list(tmp_path.glob(".out*")) and not (tmp_path / "out").exists()
