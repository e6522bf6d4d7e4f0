"""Run directories that never lose anything (docs/architecture.md, "Run directory").

A run holds a lock on its output directory for its whole life (a second run into the same
directory stops at once naming the first, or waits), writes into a staging directory beside the
final one (inside it when the target is a mount point or cannot be renamed) and publishes it when
it finished. The previous run's files (listed in its ``manifest.json``) are replaced; any other
file in the directory is kept and named. A failure or an interrupt leaves the previous complete
run untouched; what is left over by a killed process is cleaned (or restored) at the next start.

Policy: re-running into a directory that holds a dissectkit run (``manifest.json`` or
``labels.json``) or nothing (an empty mount point, ``lost+found`` aside) writes there; a directory
with other content is refused.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import shutil
import socket
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DissectkitError
from dissectkit.results.run_result import LABELS, MANIFEST

log = logging.getLogger(__name__)

_PARTIAL = ".partial-"
_OLD = ".old-"
INSIDE = ".dissectkit-"
"""Prefix of what a run keeps inside a directory it cannot rename (staging, the previous run)."""
INCOMPLETE = ".incomplete"
IGNORED = frozenset({"lost+found"})
"""Names a fresh file system volume holds that do not make a directory someone's."""
NOT_RENAMABLE = frozenset({errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOTEMPTY})
_LIVE: set[Path] = set()
_LOCKS: set[RunLock] = set()


class RunLockedError(DissectkitError):
    """Another run is writing into the same output directory."""


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


def interrupted_message(command: str, state: RunState = CURRENT, what: str = "Interrupted.") -> str:
    """What the CLI prints on Ctrl-C or SIGTERM: what was kept and the command that resumes."""
    lines = [what]
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


def run_files(path: Path) -> list[str] | None:
    """The top-level names a finished run wrote into ``path`` (its manifest's ``files``), or
    ``None`` when its manifest does not list them (a run of an older dissectkit, or none)."""
    try:
        files = json.loads((path / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(f) for f in files] if isinstance(files, list) else None


# --------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive lock on an output directory: ``.<name>.lock`` beside it (inside it when the
    parent is not writable), holding the owner's pid, host, start time and command. The operating
    system releases it when the process ends, however it ends."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.parent / f".{final.name}.lock"
        self.fd: int | None = None

    def acquire(self, wait: bool = False, notify: Any = None) -> None:
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: runs are not serialised
            return
        for path in (self.path, self.final / ".dissectkit.lock"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM) and path == self.path:
                    continue
                raise
            self.path = path
            break
        else:  # pragma: no cover - both places failed with a permission error
            return
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner(self.path)
                if not wait:
                    os.close(fd)
                    raise RunLockedError(
                        f"Another dissectkit run ({owner}) is writing into {self.final} (lock {self.path}). "
                        "Wait for it to finish, choose another directory with --out / output.dir, or pass --wait "
                        "to start when it is done."
                    ) from None
                if notify is not None:
                    notify(f"Waiting for the run ({owner}) writing into {self.final} to finish...")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous owner removed the file while we waited: lock the new one
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            wait = True
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv[:1] and [Path(sys.argv[0]).name, *sys.argv[1:]])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        _LOCKS.add(self)

    def release(self) -> None:
        if self.fd is None:
            return
        with suppress(OSError):
            os.unlink(self.path)
        with suppress(OSError):
            os.close(self.fd)
        self.fd = None
        _LOCKS.discard(self)


def _owner(lock: Path) -> str:
    """``PID 123 on host, started ..., `command```, from a lock file (what can be read of it)."""
    try:
        info = json.loads(lock.read_text())
    except (OSError, ValueError):
        return "a process whose details could not be read"
    text = f"PID {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"
    return text + (f", `{info['command']}`" if info.get("command") else "")


# --------------------------------------------------------------------------- the directory
class RunDir:
    """``lock()``, then ``begin()`` gives the directory to write into; ``commit(files)`` publishes
    it in place of ``final``; ``fail(...)`` / ``discard()`` keep the previous run untouched.

    ``keep``: directories that may live inside the run directory and are carried over to the new
    one (the cache, when ``runtime.cache_dir`` points inside the output directory).
    """

    def __init__(self, final: str | Path, keep: tuple[str | Path, ...] = ()) -> None:
        self.final = Path(final)
        self.keep = tuple(Path(k).expanduser() for k in keep)
        self.inside = _is_mount(self.final)
        self.staging = self._staging_path()
        self.lock_ = RunLock(self.final)
        self.kept: list[str] = []
        """Names of files in the directory that no dissectkit run wrote, kept by the last commit."""

    def _staging_path(self) -> Path:
        if self.inside:
            return self.final / f"{INSIDE}partial-{os.getpid()}"
        return self.final.parent / f".{self.final.name}{_PARTIAL}{os.getpid()}"

    def lock(self, wait: bool = False, notify: Any = None) -> None:
        self.lock_.acquire(wait=wait, notify=notify)

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
        final.parent.mkdir(parents=True, exist_ok=True)
        recover(final)
        kept_tops = {rel.parts[0] for rel in self._kept()}
        others = [p for p in final.iterdir() if p.name not in kept_tops and p.name not in IGNORED
                  and not p.name.startswith(INSIDE)] if final.is_dir() else []
        if others and not is_run_dir(final):
            raise DissectkitError(
                f"Output directory {final} exists and is not a dissectkit run (no {MANIFEST}); refusing to "
                "write into it. Choose another with --out / output.dir, or empty it."
            )
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        _LIVE.add(self.staging)
        return self.staging

    # -- publishing -------------------------------------------------------------------------
    def commit(self, written: list[str] | None = None) -> Path:
        """Put the finished run in place of the previous one: the previous run's files go, the new
        ones appear (whole, by one rename, where the file system allows), every other file stays."""
        written = sorted(written if written is not None else (p.name for p in self.staging.iterdir()))
        previous = run_files(self.final) if self.final.is_dir() else []
        if not self.inside:
            try:
                self._swap(written, previous)
            except OSError as exc:
                if exc.errno not in NOT_RENAMABLE:
                    raise
                log.debug("cannot rename %s (%s): publishing inside it", self.final, exc)
                self.inside = True
        if self.inside:
            self._publish_inside(written, previous)
        _LIVE.discard(self.staging)
        if self.kept:
            log.warning("Kept in %s what no dissectkit run wrote there: %s.", self.final, ", ".join(self.kept))
        return self.final

    def _carried(self, written: list[str], previous: list[str] | None) -> list[str]:
        """Names in ``final`` that stay: the ``keep`` directories and everything the previous run did
        not write (all it did not list, for a run that lists nothing: only what the new run writes
        is replaced)."""
        if not self.final.is_dir():
            return []
        kept_tops = {rel.parts[0] for rel in self._kept()}
        names = []
        for p in sorted(self.final.iterdir(), key=lambda p: p.name):
            if p.name.startswith(INSIDE) or p.name in IGNORED:
                continue
            if p.name in kept_tops or p.name not in (written if previous is None else previous):
                names.append(p.name)
        user = [n for n in names if n not in kept_tops]
        self.kept = user
        return names

    def _swap(self, written: list[str], previous: list[str] | None) -> None:
        """The staged directory takes ``final``'s place by renames; then what stays moves over from
        the previous directory (a killed process leaves it to :func:`recover`)."""
        carried = self._carried(written, previous)
        if not self.final.exists():
            os.replace(self.staging, self.final)
            return
        old = self.final.parent / f".{self.final.name}{_OLD}{os.getpid()}"
        os.replace(self.final, old)
        try:
            os.replace(self.staging, self.final)
        except OSError:
            os.replace(old, self.final)
            raise
        if _carry(old, self.final, carried, self.kept):
            shutil.rmtree(old, ignore_errors=True)
        else:
            log.warning("Some files of the previous %s could not be moved into the new run; they are in %s.", self.final, old)

    def _publish_inside(self, written: list[str], previous: list[str] | None) -> None:
        """Publish into ``final`` itself (a mount point, or a directory that cannot be renamed): the
        new files are staged inside it, the previous run's files are moved aside inside it, the new
        ones moved in (each a rename; ``labels.json`` and ``manifest.json`` last), then what was moved
        aside is removed. Every other file stays where it is."""
        final = self.final
        incoming = self.staging
        if final not in self.staging.parents:  # staged beside (the rename was refused): copy in
            incoming = final / f"{INSIDE}incoming-{os.getpid()}"
            shutil.rmtree(incoming, ignore_errors=True)
            try:
                shutil.copytree(self.staging, incoming, symlinks=True)
            except OSError:
                shutil.rmtree(incoming, ignore_errors=True)
                raise
            shutil.rmtree(self.staging, ignore_errors=True)
            _LIVE.discard(self.staging)
            _LIVE.add(incoming)
            self.staging = incoming
        carried = set(self._carried(written, previous))
        aside = final / f"{INSIDE}old-{os.getpid()}"
        aside.mkdir(exist_ok=True)
        moved: list[str] = []
        placed: list[str] = []
        renamed: list[tuple[str, str]] = []
        order = sorted(written, key=lambda n: (n == MANIFEST, n == LABELS, n))
        try:
            for p in sorted(final.iterdir(), key=lambda p: p.name):
                if p.name.startswith(INSIDE) or p.name in IGNORED or p.name in carried:
                    continue
                os.replace(p, aside / p.name)
                moved.append(p.name)
            for name in order:
                if not os.path.lexists(incoming / name):
                    continue
                if os.path.lexists(final / name):  # a user's file named like one of the run's
                    free = _free_name(final, name)
                    os.replace(final / name, final / free)
                    renamed.append((name, free))
                    self.kept = [free if k == name else k for k in self.kept]
                os.replace(incoming / name, final / name)
                placed.append(name)
        except OSError:
            for name in placed:
                with suppress(OSError):
                    os.replace(final / name, incoming / name)
            for name, free in renamed:
                with suppress(OSError):
                    os.replace(final / free, final / name)
            for name in moved:
                with suppress(OSError):
                    os.replace(aside / name, final / name)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(incoming, ignore_errors=True)
        _LIVE.discard(incoming)

    # -- failures -----------------------------------------------------------------------------
    def discard(self) -> None:
        _LIVE.discard(self.staging)
        shutil.rmtree(self.staging, ignore_errors=True)

    def keep_incomplete(self) -> Path:
        """A run that failed after its labels were written: with a previous complete run in place,
        that one stays untouched and this run's files are kept beside it as ``<name>.incomplete``;
        with none, they are published as the run directory. Returns where they are."""
        if not is_run_dir(self.final):
            self.commit()
            return self.final
        dest = self.final.parent / f"{self.final.name}{INCOMPLETE}"
        if self.inside:  # cannot leave the mount point: keep it inside, hidden from the next run
            dest = self.final / f"{INSIDE}incomplete"
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(self.staging, dest)
        _LIVE.discard(self.staging)
        return dest

    def release(self) -> None:
        self.lock_.release()


def _carry(src: Path, dst: Path, names: list[str], kept: list[str]) -> bool:
    """Move ``names`` from ``src`` into ``dst`` (a user's file named like one of the new run's is
    renamed ``name.kept-N``, and ``kept`` says so); ``False`` when one could not be moved."""
    ok = True
    for name in names:
        if not os.path.lexists(src / name):
            continue
        free = _free_name(dst, name)
        try:
            os.replace(src / name, dst / free)
        except OSError:
            ok = False
            continue
        if free != name:
            kept[:] = [free if k == name else k for k in kept]
    return ok


def _free_name(folder: Path, name: str) -> str:
    """``name``, or ``name.kept-N`` when ``folder`` already has it (a user's file named like a run's)."""
    if not (folder / name).exists():
        return name
    n = 1
    while (folder / f"{name}.kept-{n}").exists():
        n += 1
    return f"{name}.kept-{n}"


def _is_mount(path: Path) -> bool:
    try:
        return path.is_dir() and os.path.ismount(path)
    except OSError:
        return False


def recover(final: Path) -> list[str]:
    """Clean what killed runs left around ``final`` and put back what a killed commit had moved:
    their staging directories go; a previous run moved aside comes back when ``final`` is missing,
    else the files in it that no run wrote move into ``final``. Called with the directory's lock
    held, so nothing else writes there. Returns what it did, one line each."""
    done = []
    olds = sorted(final.parent.glob(f".{final.name}{_OLD}*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not final.exists() and olds:
        os.replace(olds[0], final)
        done.append(f"restored the previous run {final} from {olds[0].name} (a commit was interrupted)")
        olds = olds[1:]
    for old in olds:  # the new run is in place: what no run wrote comes over, the rest goes
        listed = run_files(old)
        names = [p.name for p in old.iterdir() if not (p.name in listed if listed is not None else (final / p.name).exists())]
        kept: list[str] = list(names)
        if names and _carry(old, final, names, kept):
            done.append(f"moved {', '.join(kept)} from {old.name} into {final}")
        shutil.rmtree(old, ignore_errors=True)
    for p in final.parent.glob(f".{final.name}{_PARTIAL}*"):
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p}")
    if final.is_dir():
        for p in [p for p in final.iterdir() if p.name.startswith(f"{INSIDE}old-")]:
            if not (final / MANIFEST).exists():  # a killed in-place publish: the previous run comes back
                for child in p.iterdir():
                    if os.path.lexists(final / child.name):
                        _remove_path(final / child.name)
                    os.replace(child, final / child.name)
                done.append(f"restored the previous run's files in {final} from {p.name}")
            shutil.rmtree(p, ignore_errors=True)
        for p in final.iterdir():
            if p.name.startswith((f"{INSIDE}partial-", f"{INSIDE}incoming-")):
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"removed {p}")
    for line in done:
        log.info("%s", line)
    return done


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def discard_unfinished() -> None:
    """Remove the staging directories of runs that did not finish (interrupt, error, exit) and
    release their locks."""
    for path in list(_LIVE):
        shutil.rmtree(path, ignore_errors=True)
        _LIVE.discard(path)
    for lock in list(_LOCKS):
        lock.release()


atexit.register(discard_unfinished)
