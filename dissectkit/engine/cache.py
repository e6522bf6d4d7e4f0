"""Content-addressed, crash-safe storage of activations and embeddings: an entry per key, one
safetensors file per chunk of probe images written atomically (docs/architecture.md, "Cache entries")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_VERSION = 1
KINDS = ("acts", "spatial", "masks", "embeds", "texts", "observed")


def content_key(*parts: Any) -> str:
    """A stable sha256 key over JSON-serialisable parts."""
    payload = json.dumps([KEY_VERSION, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name unique to this host and process, fsync, rename into place (ranks
    of a distributed run, on one machine or several sharing the cache, never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
        return self.chunk_path(c).exists()

    def missing_chunks(self) -> list[int]:
        return [c for c in range(self.n_chunks) if not self.has_chunk(c)]

    @property
    def complete(self) -> bool:
        return not self.missing_chunks()

    def write_chunk(self, c: int, values, valid, skipped: dict[int, str] | None = None,
                    extra: dict[str, Any] | None = None, metadata: dict[str, str] | None = None) -> None:
        """Store one chunk atomically (``values`` ``[n, ...]`` in the entry's dtype, ``valid``
        ``[n]`` bools, the reasons images were skipped, by probe index, kept in the file's
        metadata; ``extra`` tensors and ``metadata`` strings are stored alongside)."""
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
        atomic_write_bytes(self.chunk_path(c), save(tensors, metadata=meta))

    def chunk_metadata(self, c: int) -> dict[str, str]:
        """The string metadata stored with chunk ``c`` (reads only the file's header)."""
        from safetensors import safe_open

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

        return load_file(str(self.chunk_path(c)))

    def read_rows(self, c: int, start: int, stop: int):
        """Rows ``start:stop`` (chunk-local) of chunk ``c``'s values, without loading the rest."""
        from safetensors import safe_open

        with safe_open(str(self.chunk_path(c)), framework="pt") as fh:
            return fh.get_slice("values")[start:stop]

    def read_valid(self):
        """The valid flags ``[N]`` of every image, without loading the values."""
        import torch
        from safetensors import safe_open

        parts = []
        for c in range(self.n_chunks):
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


class Cache:
    """The cache directory: ``acts/``, ``embeds/``, ``texts/`` entries."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def entry(self, kind: str, key: str, n_items: int, chunk_size: int, meta: dict[str, Any],
              dtype: str = "float32") -> ChunkedEntry:
        root = self.root / kind / key
        meta_path = root / "meta.json"
        if not meta_path.exists():
            atomic_write_bytes(meta_path, json.dumps({**meta, "n_items": n_items, "chunk_size": chunk_size, "dtype": dtype}, indent=1, default=str).encode())
        return ChunkedEntry(root, n_items, chunk_size, dtype)

    def text_path(self, dissector_fp: str, texts: Iterable[str]) -> Path:
        return self.root / "texts" / content_key(dissector_fp, list(texts)) / "embeddings.safetensors"

    def load_texts(self, dissector_fp: str, texts: list[str]):
        from safetensors.torch import load_file

        path = self.text_path(dissector_fp, texts)
        return load_file(str(path))["values"] if path.exists() else None

    def save_texts(self, dissector_fp: str, texts: list[str], values) -> None:
        import torch
        from safetensors.torch import save

        blob = save({"values": values.to(torch.float32).contiguous().cpu()})
        atomic_write_bytes(self.text_path(dissector_fp, texts), blob)

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
                    except ValueError:
                        meta = {}
                rows.append({
                    "kind": kind,
                    "key": d.name,
                    "bytes": sum(f.stat().st_size for f in files),
                    "chunks": sum(1 for f in files if f.name.startswith("chunk_")),
                    "meta": meta,
                })
        return rows

    def clear(self, kind: str | None = None) -> int:
        """Delete entries (of one kind or all); returns the number of entries removed."""
        removed = 0
        for k in ([kind] if kind else KINDS):
            base = self.root / k
            if base.is_dir():
                removed += sum(1 for p in base.iterdir() if p.is_dir())
                shutil.rmtree(base)
        return removed
