"""Run directories: a run writes into a hidden sibling and replaces the old run directory only when
it finished, so a re-run never mixes two runs' files and a failed or interrupted run leaves the
previous results untouched. Also what an interrupted run kept (for the CLI's SIGINT message).

Policy: re-running into a directory that holds a dissectkit run (``manifest.json`` or
``labels.json``) or nothing replaces it; a directory with other content is refused.
"""

from __future__ import annotations

import atexit
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from dissectkit.base.errors import DissectkitError
from dissectkit.results.run_result import LABELS, MANIFEST

_PARTIAL = ".partial-"
_LIVE: set[Path] = set()


@dataclass
class RunState:
    """What the current (or last) run is doing: read by the CLI when it is interrupted."""

    out_dir: Path | None = None
    cache_dir: Path | None = None
    started_ns: int = field(default_factory=time.time_ns)


CURRENT = RunState()


def note_run(out_dir: Path, cache_dir: Path) -> None:
    """Record the run in progress (out and cache directories, start time)."""
    CURRENT.out_dir, CURRENT.cache_dir, CURRENT.started_ns = Path(out_dir), Path(cache_dir), time.time_ns()


def kept_chunks(state: RunState = CURRENT) -> tuple[int, int]:
    """``(written by this run, in the cache overall)`` activation / embedding chunk files."""
    if state.cache_dir is None:
        return 0, 0
    new = total = 0
    for kind in ("acts", "embeds"):
        for f in (state.cache_dir / kind).glob("*/chunk_*.safetensors"):
            total += 1
            try:
                new += f.stat().st_mtime_ns >= state.started_ns
            except OSError:
                continue
    return new, total


def interrupted_message(command: str, state: RunState = CURRENT) -> str:
    """What the CLI prints on Ctrl-C: what was kept and the command that resumes."""
    lines = ["Interrupted."]
    if state.cache_dir is not None:
        new, total = kept_chunks(state)
        lines.append(f"Kept: {new} chunk(s) computed by this run ({total} in all) in the cache {state.cache_dir}.")
    if state.out_dir is not None:
        prev = "the previous results there are untouched" if is_run_dir(state.out_dir) else "nothing was written there"
        lines.append(f"The run directory {state.out_dir} was not replaced ({prev}); partial outputs were removed.")
    lines.append(f"Resume with the same command; finished chunks are reused:\n  {command}")
    return "\n".join(lines)


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).exists() or (path / LABELS).exists()


class RunDir:
    """``begin()`` gives the directory to write into; ``commit()`` puts it in place of ``final``.

    ``keep``: directories that may live inside the run directory and are carried over to the new
    one (the cache, when ``runtime.cache_dir`` points inside the output directory).
    """

    def __init__(self, final: str | Path, keep: tuple[str | Path, ...] = ()) -> None:
        self.final = Path(final)
        self.staging = self.final.parent / f".{self.final.name}{_PARTIAL}{os.getpid()}"
        self.keep = tuple(Path(k).expanduser() for k in keep)

    def _kept(self) -> list[Path]:
        """The ``keep`` directories inside ``final``, relative to it."""
        root = self.final.resolve()
        out = []
        for k in self.keep:
            k = k.resolve()
            if k == root:
                raise DissectkitError(
                    f"The cache directory and the output directory are the same ({root}); a run directory is "
                    "replaced whole by the next run. Set runtime.cache_dir or --out to another directory."
                )
            if root in k.parents:
                out.append(k.relative_to(root))
        return out

    def begin(self) -> Path:
        final = self.final
        if final.exists() and not final.is_dir():
            raise DissectkitError(f"Output path {final} exists and is not a directory. Choose another with --out / output.dir.")
        kept_tops = {rel.parts[0] for rel in self._kept()}
        others = [p for p in final.iterdir() if p.name not in kept_tops] if final.is_dir() else []
        if others and not is_run_dir(final):
            raise DissectkitError(
                f"Output directory {final} exists and is not a dissectkit run (no {MANIFEST}); refusing to "
                "replace it. Choose another with --out / output.dir, or empty it."
            )
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir()
        _LIVE.add(self.staging)
        return self.staging

    def commit(self) -> Path:
        """Swap the finished run in: the old run (if any) goes, the new one appears whole."""
        old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
        for rel in self._kept():  # carried over whole (a rename on the same file system)
            if (self.final / rel).exists():
                (self.staging / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.final / rel, self.staging / rel)
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.staging, self.final)
        _LIVE.discard(self.staging)
        shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        _LIVE.discard(self.staging)
        shutil.rmtree(self.staging, ignore_errors=True)


def discard_unfinished() -> None:
    """Remove the staging directories of runs that did not finish (interrupt, error, exit)."""
    for path in list(_LIVE):
        shutil.rmtree(path, ignore_errors=True)
        _LIVE.discard(path)


def _remove_stale(final: Path) -> None:
    """Staging directories left by killed processes (their pid is gone)."""
    for p in final.parent.glob(f".{final.name}{_PARTIAL}*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


atexit.register(discard_unfinished)
