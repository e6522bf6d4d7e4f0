"""Spatial evidence for mask methods: bounded float16 maps and bit-packed aligned masks, cached by the
single pass and streamed back per layer (docs/scaling.md, "Spatial evidence for mask methods")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dissectkit.base.types import LayerInfo
from dissectkit.engine.cache import (
    DERIVED,
    ChunkedEntry,
    atomic_write_bytes,
    content_key,
    safetensors_parts,
    usable,
)
from dissectkit.labelling.evidence import SpatialBatch
from dissectkit.labelling.spatial_grid import bounded_size as _bounded

if TYPE_CHECKING:
    import numpy as np
    import torch

DERIVED_FORMAT = 2
"""Of the files derived from a spatial stream: 2 carries a checksum (files of format 1 are not read;
``dissectkit cache verify --repair`` moves them aside)."""
SPATIAL_MAX_SIDE = 28
"""The longest side of a cached spatial map (the maps of larger layers are area-averaged)."""
_F16_MAX = 65504.0


def bounded_size(h: int, w: int, max_side: int = SPATIAL_MAX_SIDE) -> tuple[int, int]:
    """``(h, w)`` scaled so that its longer side is at most ``max_side`` (never enlarged)."""
    return _bounded(h, w, max_side)


def bounded_maps(out: torch.Tensor) -> torch.Tensor:
    """A layer output as float16 spatial maps ``[B, K, h, w]`` of bounded size (see the module doc)."""
    import torch.nn.functional as F

    from dissectkit.nn.layers import spatial_output

    maps = spatial_output(out).float()
    size = bounded_size(*maps.shape[-2:])
    if size != tuple(maps.shape[-2:]):
        maps = F.adaptive_avg_pool2d(maps, size)
    return as_float16(maps)


def as_float16(maps: torch.Tensor) -> torch.Tensor:
    """Maps as float16 for storage, clamped to float16's finite range (no inf from large values)."""
    return maps.clamp(-_F16_MAX, _F16_MAX).half()


def spatial_shape(info: LayerInfo) -> tuple[int, int, int]:
    """The cached map shape ``(K, h, w)`` of a layer from its recorded output shape."""
    import torch

    if info.shape:
        return tuple(bounded_maps(torch.zeros(1, *info.shape)).shape[1:])
    return (info.n_neurons, 1, 1)


def align_masks(masks: dict[str, Any] | None, align: Any) -> dict[str, np.ndarray] | None:
    """A probe item's masks as boolean arrays lined up with the target's input."""
    import numpy as np

    if not masks:
        return masks
    if callable(align):
        return {c: np.asarray(align(m), dtype=bool) for c, m in masks.items()}
    return {c: np.asarray(m, dtype=bool) for c, m in masks.items()}


def pack_masks(rows: list[dict[str, np.ndarray] | None]) -> tuple[Any, Any, dict[str, str]]:
    """Rows of masks -> (row byte offsets ``[n]`` int64, packed bits uint8, metadata)."""
    import numpy as np
    import torch

    offsets, parts, layout, pos = [], [], [], 0
    for masks in rows:
        offsets.append(pos)
        if masks is None:
            layout.append(None)
            continue
        row = []
        for concept, m in masks.items():
            bits = np.packbits(np.ascontiguousarray(m, dtype=bool).reshape(-1))
            parts.append(bits)
            row.append([concept, int(m.shape[0]), int(m.shape[1])])
            pos += bits.size
        layout.append(row)
    bits = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return torch.tensor(offsets, dtype=torch.int64), torch.from_numpy(bits), {"masks": json.dumps(layout)}


def packed_masks(entry: ChunkedEntry, c: int) -> list[list[tuple[str, int, int, np.ndarray]] | None]:
    """The masks of every row of chunk ``c`` of a masks entry as stored: per row ``None`` (no masks)
    or ``(concept, H, W, bits)`` per mask, ``bits`` the flattened mask packed by ``np.packbits``."""
    data = entry.read_chunk_tensors(c)
    layout = json.loads(entry.chunk_metadata(c)["masks"])
    bits, offsets = data["bits"].numpy(), data["values"].tolist()
    rows: list[list[tuple[str, int, int, np.ndarray]] | None] = []
    for start, row in zip(offsets, layout, strict=True):
        if row is None:
            rows.append(None)
            continue
        masks, pos = [], start
        for concept, h, w in row:
            n = (h * w + 7) // 8
            masks.append((concept, h, w, bits[pos : pos + n]))
            pos += n
        rows.append(masks)
    return rows


def unpack_masks(entry: ChunkedEntry, c: int) -> list[dict[str, np.ndarray] | None]:
    """The masks of every row of chunk ``c`` of a masks entry."""
    import numpy as np

    return [None if row is None else
            {concept: np.unpackbits(bits, count=h * w).reshape(h, w).astype(bool) for concept, h, w, bits in row}
            for row in packed_masks(entry, c)]


@dataclass
class SpatialSource:
    """``Evidence.spatial_maps`` of one layer: each call streams ``SpatialBatch`` over the images
    marked in ``valid`` (probe order), reading the cached maps and masks chunk by chunk."""

    maps: ChunkedEntry
    masks: ChunkedEntry
    valid: torch.Tensor
    batch_size: int

    @property
    def key(self) -> str:
        """A content key of what the stream yields (the maps' and masks' cache entries and the images
        kept): what is computed from it (thresholds, trained heads) may be memoised or cached under it."""
        return content_key("spatial-source", self.maps.root.name, self.masks.root.name, len(self.valid), self._rows())

    @property
    def masks_key(self) -> str:
        """A content key of the masks the stream yields (the masks' cache entry and the images kept):
        the same for every layer of a target."""
        return content_key("spatial-masks", self.masks.root.name, len(self.valid), self._rows())

    def _rows(self) -> str:
        """A digest of which images the stream keeps."""
        import hashlib

        import numpy as np

        return hashlib.sha256(np.packbits(self.valid.cpu().numpy().astype(bool)).tobytes()).hexdigest()

    def derived_path(self, name: str, parts: Any) -> Path:
        """Where what is computed from this stream under ``name`` and ``parts`` (JSON-serialisable
        settings) is kept: inside the maps' cache entry, so it goes when the maps go; what is named
        ``masks-...`` depends on the masks alone and is kept in theirs, shared by the target's layers."""
        if name.startswith("masks-"):
            return self.masks.root / DERIVED / f"{name}-{content_key(name, DERIVED_FORMAT, self.masks_key, parts)}.safetensors"
        return self.maps.root / DERIVED / f"{name}-{content_key(name, DERIVED_FORMAT, self.key, parts)}.safetensors"

    def load_derived(self, name: str, parts: Any) -> dict[str, torch.Tensor] | None:
        """Tensors saved by :meth:`save_derived` with the same ``name`` and ``parts``, else ``None``
        (also for a file that fails its checksum: it is moved aside, with a warning, and computed again)."""
        from safetensors.torch import load_file

        path = self.derived_path(name, parts)
        return load_file(str(path)) if usable(path) else None

    def save_derived(self, name: str, parts: Any, tensors: dict[str, torch.Tensor]) -> None:
        """Keep tensors computed from this stream (e.g. thresholds, trained heads), written atomically
        with their checksum, like the chunks."""
        from safetensors.torch import save

        blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        atomic_write_bytes(self.derived_path(name, parts), safetensors_parts(blob))

    def packed_rows(self) -> Iterator[list[tuple[str, int, int, np.ndarray]] | None]:
        """The masks of each row the stream yields, in its order, as stored (:func:`packed_masks`),
        without reading the maps or unpacking a mask."""
        for c in range(self.maps.n_chunks):
            span = self.maps.chunk_range(c)
            rows = self.valid[span.start : span.stop].nonzero().flatten().tolist()
            if rows:
                packed = packed_masks(self.masks, c)
                yield from (packed[i] for i in rows)

    @property
    def map_size(self) -> tuple[int, int]:
        """``(h, w)`` of the cached maps."""
        for c in range(self.maps.n_chunks):
            span = self.maps.chunk_range(c)
            if bool(self.valid[span.start : span.stop].any()):
                return tuple(self.maps.read_rows(c, 0, 1).shape[-2:])  # type: ignore[return-value]
        return (1, 1)

    def maps_at(self, positions: list[int]) -> torch.Tensor:
        """``[len(positions), K, h, w]`` float32: the maps of the stream's rows ``positions`` (indices
        into what a call yields, sorted), read chunk by chunk without unpacking any mask."""
        import torch

        probe_rows = self.valid.nonzero().flatten()[torch.as_tensor(positions, dtype=torch.int64)]
        parts = []
        for c in range(self.maps.n_chunks):
            span = self.maps.chunk_range(c)
            local = probe_rows[(probe_rows >= span.start) & (probe_rows < span.stop)] - span.start
            if local.numel():
                lo, hi = int(local.min()), int(local.max()) + 1
                parts.append(self.maps.read_rows(c, lo, hi)[local - lo].to(torch.float32))
        return torch.cat(parts)

    def __call__(self) -> Iterator[SpatialBatch]:
        import torch

        for c in range(self.maps.n_chunks):
            span = self.maps.chunk_range(c)
            rows = self.valid[span.start : span.stop].nonzero().flatten()
            if not rows.numel():
                continue
            masks = unpack_masks(self.masks, c)
            for b in range(0, rows.numel(), self.batch_size):
                sel = rows[b : b + self.batch_size]
                lo, hi = int(sel[0]), int(sel[-1]) + 1
                maps = self.maps.read_rows(c, lo, hi)[sel - lo].to(torch.float32)
                yield SpatialBatch(maps, [masks[i] for i in sel.tolist()])
