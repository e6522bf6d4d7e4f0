"""Content-addressed, crash-safe, verified storage of activations and embeddings: an entry per key,
one safetensors file per chunk of probe images written atomically with a checksum of its bytes
(docs/architecture.md, "Cache entries").

Every file the cache writes carries a blake2b checksum written in the same atomic step: a
safetensors file in its own header (``__metadata__["dissectkit.blake2b"]``, over the rest of the
header and every data byte), any other file in a sidecar ``<name>.blake2b`` put in place before the
file itself. The first read of a file in a run verifies it (streamed, memory bounded; later reads of
the unchanged file in the same process trust that check). A file that fails (flipped bytes,
truncated, empty, a damaged header, or a file dissectkit did not write) is moved aside to
``<cache>/quarantine/`` - never deleted - with a warning naming it, and the chunk is computed again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DataError

KEY_VERSION = 2  # 2: every file carries a checksum (entries of version 1 are no longer read)
FORMAT = 2
KINDS = ("acts", "spatial", "masks", "embeds", "texts", "observed")
QUARANTINE = "quarantine"
DERIVED = "derived"
"""The folder of an entry holding what methods compute from it (thresholds, trained heads, indexes)."""
CHECKSUM_KEY = "dissectkit.blake2b"
SIDECAR = ".blake2b"
_BLOCK = 1 << 23  # bytes hashed per read
_MAX_HEADER = 100 << 20

log = logging.getLogger(__name__)


class CacheCorruptError(DataError):
    """A cache file failed its check at a read that could not recompute it (moved aside already)."""


def content_key(*parts: Any) -> str:
    """A stable sha256 key over JSON-serialisable parts."""
    payload = json.dumps([KEY_VERSION, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def atomic_write_bytes(path: Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Write to a temporary name unique to this host and process, fsync, rename into place (ranks
    of a distributed run, on one machine or several sharing the cache, never see a partial file).
    A failure (a full disk) removes the temporary file before the error goes on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            for part in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# --------------------------------------------------------------------------- checksums
def _digest() -> Any:
    return hashlib.blake2b(digest_size=16)


def _canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def safetensors_parts(blob: bytes, metadata_key: str = CHECKSUM_KEY) -> list[bytes | memoryview]:
    """A serialised safetensors file with the checksum of its header and data added to its
    metadata: the parts to write (length, header, the unchanged data bytes)."""
    view = memoryview(blob)
    (n,) = struct.unpack("<Q", view[:8])
    header = json.loads(bytes(view[8 : 8 + n]))
    data = view[8 + n :]
    h = _digest()
    h.update(_canonical(header))
    h.update(data)
    header.setdefault("__metadata__", {})[metadata_key] = h.hexdigest()
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return [struct.pack("<Q", len(raw)), raw, data]


def check_safetensors(path: Path) -> str | None:
    """``None`` when ``path`` is a safetensors file whose checksum matches, else what is wrong."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if size < 8:
                return f"{'empty' if size == 0 else 'truncated'} file ({size} bytes)"
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > min(size - 8, _MAX_HEADER):
                return f"damaged header (it claims {n} bytes of a {size}-byte file)"
            try:
                header = json.loads(fh.read(n))
                meta = header.get("__metadata__") or {}
                expected = meta.pop(CHECKSUM_KEY, None)
                ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
            except (ValueError, TypeError, KeyError, AttributeError, IndexError):
                return "damaged header (not the JSON of a safetensors file)"
            if expected is None:
                return "no checksum: not written by this version of dissectkit"
            if not meta:
                header.pop("__metadata__", None)
            data_len = max(ends, default=0)
            if size != 8 + n + data_len:
                what = "truncated" if size < 8 + n + data_len else "longer than its header says"
                return f"{what} ({size} bytes, the header describes {8 + n + data_len})"
            h = _digest()
            h.update(_canonical(header))
            while block := fh.read(_BLOCK):
                h.update(block)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if h.hexdigest() != expected:
        return "checksum mismatch (its bytes changed after dissectkit wrote it)"
    return None


def write_checked(path: Path, data: bytes) -> None:
    """Write a file other than safetensors with a sidecar checksum (``<name>.blake2b``, put in place
    first: a file is never newer than its checksum)."""
    h = _digest()
    h.update(data)
    atomic_write_bytes(path.with_name(path.name + SIDECAR), f"{h.hexdigest()} {len(data)}\n".encode())
    atomic_write_bytes(path, data)


def check_file(path: Path) -> str | None:
    """``None`` when ``path`` matches its sidecar checksum (or is a verified safetensors file)."""
    if path.suffix == ".safetensors":
        return check_safetensors(path)
    try:
        digest, _, length = path.with_name(path.name + SIDECAR).read_text().strip().partition(" ")
    except FileNotFoundError:
        return "no checksum: not written by this version of dissectkit"
    except OSError as exc:
        return f"checksum unreadable ({exc.strerror or exc})"
    try:
        size = path.stat().st_size
        if length.isdigit() and size != int(length):
            return f"{'truncated' if size < int(length) else 'longer than written'} ({size} bytes, {length} written)"
        h = _digest()
        with open(path, "rb") as fh:
            while block := fh.read(_BLOCK):
                h.update(block)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None if h.hexdigest() == digest else "checksum mismatch (its bytes changed after dissectkit wrote it)"


_VERIFIED: dict[str, tuple[int, int, int, int]] = {}
VERIFY = True
"""Verify files at their first read (``benchmarks/cache_verify.py`` turns it off to measure the cost)."""


def reset_verified() -> None:
    """Forget which files were verified (each run checks again at its first read)."""
    _VERIFIED.clear()


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def verified(path: Path) -> str | None:
    """Like :func:`check_file`, remembered for the unchanged file in this process."""
    stamp = _stamp(path)
    if stamp is None:
        return "missing"
    if not VERIFY or _VERIFIED.get(str(path)) == stamp:
        return None
    problem = check_file(path)
    if problem is None:
        _VERIFIED[str(path)] = stamp
    return problem


def cache_root_of(path: Path) -> Path:
    """The cache directory of a file ``<cache>/<kind>/<key>/<file>`` (or deeper in its entry, e.g.
    ``<cache>/<kind>/<key>/derived/<file>``)."""
    for parent in path.parents:
        if parent.name in KINDS:
            return parent.parent
    return path.parent.parent.parent


def quarantine(path: Path, problem: str, warn: bool = True) -> Path | None:
    """Move a failed file (and its sidecar) aside to ``<cache>/quarantine/<kind>/<key>/``, with a
    warning naming it; returns where it went (``None`` when it vanished meanwhile)."""
    root = cache_root_of(path)
    dest_dir = root / QUARANTINE / path.parent.relative_to(root)
    dest = dest_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    _VERIFIED.pop(str(path), None)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    sidecar = path.with_name(path.name + SIDECAR)
    if sidecar.exists():
        with contextlib.suppress(OSError):
            os.replace(sidecar, dest.with_name(dest.name + SIDECAR))
    if warn:
        log.warning("Cache entry %s/%s%s: %s failed its check (%s); moved aside to %s and computed again.",
                    path.parent.parent.name, path.parent.name, _describe_entry(path.parent), path.name, problem, dest)
    return dest


def _describe_entry(folder: Path) -> str:
    """`` (target=..., layer=...)`` from an entry's ``meta.json``, when readable."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return ""
    parts = [f"{k}={meta[k]}" for k in ("target", "layer", "dissector", "probe") if isinstance(meta, dict) and k in meta]
    return f" ({', '.join(parts)})" if parts else ""


def usable(path: Path) -> bool:
    """Whether a cache file exists and passes its check; one that fails is quarantined (warned)."""
    if not path.exists():
        return False
    problem = verified(path)
    if problem is None:
        return True
    quarantine(path, problem)
    return False


def _require(path: Path) -> None:
    """Before a read: a file that fails its check now (changed during the run) stops the run."""
    problem = verified(path)
    if problem is not None:
        dest = quarantine(path, problem) if problem != "missing" else None
        where = f"; it was moved aside to {dest}" if dest else ""
        raise CacheCorruptError(
            f"Cache file {path} failed its check ({problem}){where}. Run the same command again: it is computed again."
        )


# --------------------------------------------------------------------------- orphan temporaries
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def orphan_temporaries(folder: Path, max_age_s: float = 86_400.0) -> Iterator[Path]:
    """Temporary files (``.<name>.<host>.<pid>.tmp``) in ``folder`` whose writer is gone: a process of
    this host that no longer runs, or any older than ``max_age_s``."""
    host = socket.gethostname()
    now = time.time()
    try:
        names = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except OSError:
        return
    for e in names:
        parts = e.name[:-4].rsplit(".", 2)
        pid = parts[-1] if len(parts) == 3 else ""
        try:
            old = now - e.stat().st_mtime > max_age_s
        except OSError:
            continue
        if old or (len(parts) == 3 and parts[1] == host and pid.isdigit() and not _pid_alive(int(pid))):
            yield Path(e.path)


def clean_temporaries(folder: Path) -> int:
    removed = 0
    for p in orphan_temporaries(folder):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


# --------------------------------------------------------------------------- entries
@dataclass
class ChunkedEntry:
    """Per-chunk arrays for one (model, probe, layer or embedding) key."""

    root: Path
    n_items: int
    chunk_size: int
    dtype: str = "float32"

    @property
    def n_chunks(self) -> int:
        return (self.n_items + self.chunk_size - 1) // self.chunk_size

    def chunk_range(self, c: int) -> range:
        return range(c * self.chunk_size, min(self.n_items, (c + 1) * self.chunk_size))

    def chunk_path(self, c: int) -> Path:
        return self.root / f"chunk_{c:06d}.safetensors"

    def has_chunk(self, c: int) -> bool:
        """Whether chunk ``c`` is present and passes its check (a chunk that fails is moved aside,
        with a warning, and counts as missing: the pass computes it again)."""
        return usable(self.chunk_path(c))

    def missing_chunks(self) -> list[int]:
        return [c for c in range(self.n_chunks) if not self.has_chunk(c)]

    @property
    def complete(self) -> bool:
        return not self.missing_chunks()

    def write_chunk(self, c: int, values, valid, skipped: dict[int, str] | None = None,
                    extra: dict[str, Any] | None = None, metadata: dict[str, str] | None = None) -> None:
        """Store one chunk atomically with its checksum (``values`` ``[n, ...]`` in the entry's
        dtype, ``valid`` ``[n]`` bools, the reasons images were skipped, by probe index, kept in the
        file's metadata; ``extra`` tensors and ``metadata`` strings are stored alongside)."""
        import torch
        from safetensors.torch import save

        n = len(self.chunk_range(c))
        if values.shape[0] != n or valid.shape[0] != n:
            raise ValueError(f"chunk {c} of {self.root} expects {n} rows, got {values.shape[0]}")
        tensors = {
            "values": values.to(getattr(torch, self.dtype)).contiguous().cpu(),
            "valid": valid.to(torch.uint8).contiguous().cpu(),
            **{k: v.contiguous().cpu() for k, v in (extra or {}).items()},
        }
        meta = {**(metadata or {}), "skipped": json.dumps({str(k): v for k, v in (skipped or {}).items()})}
        path = self.chunk_path(c)
        atomic_write_bytes(path, safetensors_parts(save(tensors, metadata=meta)))
        stamp = _stamp(path)
        if stamp is not None:
            _VERIFIED[str(path)] = stamp  # written here: its checksum was just made from these bytes

    def chunk_metadata(self, c: int) -> dict[str, str]:
        """The string metadata stored with chunk ``c`` (reads only the file's header)."""
        from safetensors import safe_open

        _require(self.chunk_path(c))
        with safe_open(str(self.chunk_path(c)), framework="pt") as fh:
            return dict(fh.metadata() or {})

    def skipped(self) -> dict[int, str]:
        """Probe index -> reason, for every image skipped in any finished chunk."""
        out: dict[int, str] = {}
        for c in range(self.n_chunks):
            if self.has_chunk(c):
                meta = self.chunk_metadata(c)
                out.update({int(k): v for k, v in json.loads(meta.get("skipped", "{}")).items()})
        return out

    def read_chunk(self, c: int):
        """(values, valid bools) of chunk ``c``."""
        data = self.read_chunk_tensors(c)
        return data["values"], data["valid"].bool()

    def read_chunk_tensors(self, c: int) -> dict[str, Any]:
        """Every tensor stored in chunk ``c`` by name."""
        from safetensors.torch import load_file

        _require(self.chunk_path(c))
        return load_file(str(self.chunk_path(c)))

    def read_rows(self, c: int, start: int, stop: int):
        """Rows ``start:stop`` (chunk-local) of chunk ``c``'s values, without loading the rest."""
        from safetensors import safe_open

        _require(self.chunk_path(c))
        with safe_open(str(self.chunk_path(c)), framework="pt") as fh:
            return fh.get_slice("values")[start:stop]

    def read_valid(self):
        """The valid flags ``[N]`` of every image, without loading the values."""
        import torch
        from safetensors import safe_open

        parts = []
        for c in range(self.n_chunks):
            _require(self.chunk_path(c))
            with safe_open(str(self.chunk_path(c)), framework="pt") as fh:
                parts.append(fh.get_tensor("valid").bool())
        return torch.cat(parts)

    def iter_rows(self, keep):
        """The values of the rows where ``keep`` (``[N]`` bools) is true: one block per chunk, in order
        (one chunk in memory at a time)."""
        for c in range(self.n_chunks):
            r = self.chunk_range(c)
            mask = keep[r.start : r.stop]
            if mask.any():
                values, _valid = self.read_chunk(c)
                yield values[mask]

    def read_all(self):
        """All chunks concatenated: (values ``[N, K]``, valid ``[N]``)."""
        import torch

        chunks = [self.read_chunk(c) for c in range(self.n_chunks)]
        return torch.cat([v for v, _ in chunks]), torch.cat([ok for _, ok in chunks])


@dataclass
class Problem:
    """One file ``cache verify`` found wrong (``repaired``: moved aside or removed)."""

    path: Path
    problem: str
    repaired: bool = False


class Cache:
    """The cache directory: ``acts/``, ``spatial/``, ``masks/``, ``embeds/``, ``texts/`` and
    ``observed/`` entries (``quarantine/`` holds the files moved aside)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def entry(self, kind: str, key: str, n_items: int, chunk_size: int, meta: dict[str, Any],
              dtype: str = "float32") -> ChunkedEntry:
        root = self.root / kind / key
        meta_path = root / "meta.json"
        if root.is_dir():
            clean_temporaries(root)  # left by a killed or failed writer
        if not meta_path.exists():
            info = {**meta, "n_items": n_items, "chunk_size": chunk_size, "dtype": dtype, "format": FORMAT}
            atomic_write_bytes(meta_path, json.dumps(info, indent=1, default=str).encode())
        return ChunkedEntry(root, n_items, chunk_size, dtype)

    def text_path(self, dissector_fp: str, texts: Iterable[str]) -> Path:
        return self.root / "texts" / content_key(dissector_fp, list(texts)) / "embeddings.safetensors"

    def load_texts(self, dissector_fp: str, texts: list[str]):
        """Cached text embeddings, or ``None`` (absent, or failed its check: moved aside)."""
        from safetensors.torch import load_file

        path = self.text_path(dissector_fp, texts)
        return load_file(str(path))["values"] if usable(path) else None

    def save_texts(self, dissector_fp: str, texts: list[str], values) -> None:
        import torch
        from safetensors.torch import save

        blob = save({"values": values.to(torch.float32).contiguous().cpu()})
        atomic_write_bytes(self.text_path(dissector_fp, texts), safetensors_parts(blob))

    def entries(self) -> list[dict[str, Any]]:
        """Every entry with its kind, key, size in bytes, chunk count and recorded metadata."""
        rows = []
        for kind in KINDS:
            base = self.root / kind
            if not base.is_dir():
                continue
            for d in sorted(p for p in base.iterdir() if p.is_dir()):
                files = [f for f in d.iterdir() if f.is_file()]
                meta = {}
                if (d / "meta.json").exists():
                    try:
                        meta = json.loads((d / "meta.json").read_text())
                    except (ValueError, OSError):
                        meta = {}
                rows.append({
                    "kind": kind,
                    "key": d.name,
                    "bytes": sum(f.stat().st_size for f in files),
                    "chunks": sum(1 for f in files if f.name.startswith("chunk_")),
                    "meta": meta,
                })
        return rows

    def quarantined(self) -> list[Path]:
        """The files moved aside (``quarantine/``)."""
        base = self.root / QUARANTINE
        return sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    def verify(self, repair: bool = False) -> tuple[int, list[Problem], list[Path]]:
        """Check every file of every entry: ``(files checked, problems, legacy entries)``. Legacy
        entries (written before checksums, under keys no run reads any more) are listed apart.
        ``repair`` moves failed files aside (as a run would), removes orphan temporaries and
        rewrites nothing else."""
        checked, problems, legacy = 0, [], []
        for kind in KINDS:
            base = self.root / kind
            if not base.is_dir():
                continue
            for d in sorted(p for p in base.iterdir() if p.is_dir()):
                meta = d / "meta.json"
                if kind not in ("texts", "observed"):
                    try:
                        info = json.loads(meta.read_text())
                    except FileNotFoundError:
                        info = None
                    except (ValueError, OSError):
                        info = {"format": FORMAT}
                        problems.append(Problem(meta, "not valid JSON", repaired=repair and quarantine(meta, "", warn=False) is not None))
                    if info is not None and info.get("format") != FORMAT:
                        legacy.append(d)
                        continue
                for tmp in orphan_temporaries(d, max_age_s=3600.0):
                    problems.append(Problem(tmp, "an orphan temporary file", repaired=repair and _remove(tmp)))
                derived = sorted((d / DERIVED).iterdir()) if (d / DERIVED).is_dir() else []
                for f in [*sorted(d.iterdir()), *derived]:
                    data = f.name.endswith(".safetensors") or (kind == "observed" and f.name == "observation")
                    if not f.is_file() or not data:
                        continue
                    checked += 1
                    problem = check_file(f)
                    if problem is not None:
                        problems.append(Problem(f, problem, repaired=repair and quarantine(f, problem, warn=False) is not None))
        hashes = self.root / "file-hashes"
        if hashes.is_dir():
            for f in sorted(hashes.iterdir()):
                if f.name.endswith(".tmp"):
                    problems.append(Problem(f, "an orphan temporary file", repaired=repair and _remove(f)))
                    continue
                checked += 1
                if not _is_digest(f):
                    problems.append(Problem(f, "not a sha256 digest", repaired=repair and _remove(f)))
        return checked, problems, legacy

    def clear(self, kind: str | None = None) -> int:
        """Delete entries (of one kind or all); returns the number of entries removed."""
        removed = 0
        for k in ([kind] if kind else KINDS):
            base = self.root / k
            if base.is_dir():
                removed += sum(1 for p in base.iterdir() if p.is_dir())
                shutil.rmtree(base)
        return removed


def _is_digest(path: Path) -> bool:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False
    return len(text) == 64 and all(ch in "0123456789abcdef" for ch in text)


def _remove(path: Path) -> bool:
    """Remove a file dissectkit wrote (an orphan temporary, a memo); ``True`` when gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return True
    except OSError as exc:
        return exc.errno == errno.ENOENT
    return True
