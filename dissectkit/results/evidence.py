"""What a finished run keeps for reporters: top images per neuron (data) and a cache-backed reader.

At the end of labelling the engine calls :func:`build_run_evidence` once. It computes, per
(target, layer), each neuron's ``TOP_IMAGES`` most activating *valid* probe images by a streaming
running top-k over the cached activation chunks (memory ``O(K * TOP_IMAGES + chunk)``, never the
whole ``[N, K]`` matrix); these indices are stored in ``RunResult.top_images`` and in
``labels.json``. The returned :class:`RunEvidence` holds plain references (cache entries, probe,
target instances, device, skipped images) - no closures over engine state - and reads what a live
reporter may additionally need: spatial maps of chosen images, longer top lists, whole matrices.

Order of a top list: activation descending, ties by the lower probe index (deterministic).
Skipped images (unreadable when the cache was filled) never appear. A neuron whose activation
is constant over the valid images has an empty list: no image is "top-activating".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dissectkit.base.errors import DataError, DissectkitError

if TYPE_CHECKING:
    import torch


class ChunkedEntry(Protocol):
    """What evidence reads of a cache entry (``dissectkit.engine.cache.ChunkedEntry`` is one): its
    chunks of rows, each ``(values, valid)``."""

    @property
    def n_chunks(self) -> int: ...
    def chunk_range(self, c: int) -> range: ...
    def read_chunk(self, c: int) -> Any: ...
    def read_all(self) -> Any: ...


TOP_IMAGES = 10
"""Top images per neuron kept in ``RunResult.top_images`` / ``labels.json``."""

TopTable = dict[str, dict[str, list[list[int]]]]
"""``{target: {layer: [[probe index, ...] per neuron]}}``."""


@dataclass
class TopImages:
    """One layer's top images: ``indices[k]`` and ``values[k]`` of neuron ``k``, best first."""

    indices: list[list[int]]
    values: list[list[float]]


class RunningTop:
    """A running top-``n`` per column over row blocks: ``(value desc, index asc)``, exact and deterministic.

    With a ``payload`` function, each kept (column, row) pair also keeps a payload (a neuron's map
    on that image), asked for only for the pairs that enter the top: ``payload(columns, positions)``
    returns ``[m, ...]`` for positions within the block just added."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.vals: np.ndarray | None = None  # [K, <=n] float64, best first
        self.idx: np.ndarray | None = None  # [K, <=n] int64
        self.payload: np.ndarray | None = None  # [K, <=n, ...] when a payload is kept
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def add(self, values: np.ndarray, rows: np.ndarray, payload: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> None:
        """``values`` ``[m, K]`` of probe rows ``rows`` (ascending, all above those seen before)."""
        if len(rows) == 0:
            return
        v = np.nan_to_num(values.astype(np.float64, copy=False).T, nan=-np.inf)  # [K, m]
        k_count = v.shape[0]
        lo, hi = v.min(axis=1), v.max(axis=1)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        idx = np.broadcast_to(rows.astype(np.int64), v.shape)
        n_old = 0 if self.vals is None else self.vals.shape[1]
        src = np.broadcast_to(np.arange(n_old, n_old + v.shape[1]), v.shape)  # slot in [old | new]
        if self.vals is not None:  # earlier rows first: ties keep index order in the concatenation
            v = np.concatenate([self.vals, v], axis=1)
            idx = np.concatenate([self.idx, idx], axis=1)
            src = np.concatenate([np.broadcast_to(np.arange(n_old), (k_count, n_old)), src], axis=1)
        if v.shape[1] > self.n:
            keep = self._select(v, idx)
            v = v[keep].reshape(k_count, self.n)
            idx = idx[keep].reshape(k_count, self.n)
            src = src[keep].reshape(k_count, self.n)
        order = np.argsort(-v, axis=1, kind="stable")
        self.vals = np.take_along_axis(v, order, axis=1)
        self.idx = np.take_along_axis(idx, order, axis=1)
        if payload is not None:
            self._keep_payload(np.take_along_axis(src, order, axis=1), n_old, payload)

    def _keep_payload(self, src: np.ndarray, n_old: int, payload: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        fresh = src >= n_old
        cols, slots = np.nonzero(fresh)
        new = payload(cols, src[cols, slots] - n_old)
        kept = np.empty(src.shape + new.shape[1:], dtype=new.dtype)
        kept[cols, slots] = new
        if self.payload is not None:
            old_cols, old_slots = np.nonzero(~fresh)
            kept[old_cols, old_slots] = self.payload[old_cols, src[old_cols, old_slots]]
        self.payload = kept

    def _select(self, v: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Boolean ``[K, M]`` with exactly ``n`` per row: the ``n`` best by (value desc, index asc)."""
        n = self.n
        nth = -np.partition(-v, n - 1, axis=1)[:, n - 1]  # the n-th largest value per row
        keep = v >= nth[:, None]
        tied_rows = np.nonzero(keep.sum(axis=1) > n)[0]
        if len(tied_rows):  # too many equal to the n-th value: keep the lowest indices among them
            tv, ti, t = v[tied_rows], idx[tied_rows], nth[tied_rows, None]
            above = tv > t
            need = n - above.sum(axis=1)
            key = np.where(tv == t, ti, np.iinfo(np.int64).max)
            smallest = np.partition(key, np.arange(n), axis=1)[:, :n]
            cutoff = smallest[np.arange(len(tied_rows)), need - 1]
            keep[tied_rows] = above | ((tv == t) & (ti <= cutoff[:, None]))
        return keep

    def result(self, k_count: int) -> TopImages:
        if self.vals is None:
            return TopImages([[] for _ in range(k_count)], [[] for _ in range(k_count)])
        dead = self.hi == self.lo
        return TopImages(
            [[] if dead[k] else self.idx[k].tolist() for k in range(len(dead))],
            [[] if dead[k] else [float(x) for x in self.vals[k]] for k in range(len(dead))],
        )


def streaming_top_images(entry: ChunkedEntry, n: int, skipped: Iterable[int] = ()) -> TopImages:
    """Each neuron's ``n`` most activating valid images, one chunk of the cache entry at a time."""
    skip = np.fromiter(sorted(set(skipped)), dtype=np.int64)
    running = RunningTop(max(1, n))
    k_count = 0
    for c in range(entry.n_chunks):
        values, valid = entry.read_chunk(c)
        k_count = values.shape[1]
        rows = np.arange(entry.chunk_range(c).start, entry.chunk_range(c).stop, dtype=np.int64)
        ok = valid.numpy().astype(bool) & ~np.isin(rows, skip)
        running.add(values.numpy()[ok], rows[ok])
    top = running.result(k_count)
    if n <= 0:
        return TopImages([[] for _ in top.indices], [[] for _ in top.values])
    return top


class _Captured(Exception):
    """Raised by the last capture hook to stop a forward pass early."""


@dataclass
class RunEvidence:
    """Cache-backed evidence of a finished run, for live reporters (explicit fields, no closures).

    ``acts[(target, layer)]`` and ``embeds[dissector]`` are the cache entries of the run;
    ``targets`` maps a target label to its built target (``module``, ``preprocess``); ``skipped``
    maps probe indices skipped during the pass to their reason; ``top`` is the persisted top table
    with the activation values of the same entries in ``top_values``; ``observations`` holds what
    the reporters' pass observers kept, by reporter label (``dissectkit.results.observe``).
    """

    acts: dict[tuple[str, str], ChunkedEntry]
    embeds: dict[str, ChunkedEntry]
    probe: Any
    targets: dict[str, Any]
    device: str = "cpu"
    skipped: dict[int, str] = field(default_factory=dict)
    batch_size: int = 32
    top: TopTable = field(default_factory=dict)
    top_values: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)
    observations: dict[str, Any] = field(default_factory=dict)

    # -- images ------------------------------------------------------------------------------
    def is_valid(self, index: int) -> bool:
        """Whether probe image ``index`` was read during the pass (skipped images never are)."""
        return index not in self.skipped

    def top_images(self, target: str, layer: str, n: int) -> TopImages:
        """The ``n`` top images per neuron: the stored ones when enough, else a fresh streaming pass."""
        stored = self.top.get(target, {}).get(layer)
        if stored is not None and n <= TOP_IMAGES:
            values = self.top_values[target][layer]
            return TopImages([r[:n] for r in stored], [r[:n] for r in values])
        return streaming_top_images(self._entry(target, layer), n, self.skipped)

    def read(self, index: int) -> Any:
        """Probe item ``index`` (raises a ``DissectkitError`` when it cannot be read now)."""
        if not self.is_valid(index):
            raise DataError(f"Probe image {index} was skipped during the run: {self.skipped[index]}")
        return self.probe[index]

    # -- activations -------------------------------------------------------------------------
    def activations(self, target: str, layer: str):
        """The whole ``[N, K]`` matrix of one layer (skipped images are zero rows): ``O(N K)`` memory."""
        return self._entry(target, layer).read_all()[0]

    def image_embeddings(self, dissector: str):
        """The dissector's ``[N, D]`` image embeddings (skipped images are zero rows)."""
        if dissector not in self.embeds:
            raise DataError(f"No image embeddings of dissector '{dissector}' in this run; it has {sorted(self.embeds)}.")
        return self.embeds[dissector].read_all()[0]

    def model_input(self, target: str, image: Any):
        """One raw probe image preprocessed for ``target`` (a tensor ready to stack into a batch)."""
        return self._target(target).preprocess(image)

    def spatial_maps(self, target: str, layers: Sequence[str], inputs: Any, max_side: int | None = None) -> dict[str, Any]:
        """``{layer: Tensor[b, K, h, w]}`` of a batch of ``model_input``s, one forward pass for all layers.

        Maps with a side above ``max_side`` are average-pooled down to at most ``max_side`` (on the
        device, :func:`pool_maps`). The forward pass stops as soon as every layer is captured.
        """
        import torch

        from dissectkit.nn.capture import Capture, first_tensor
        from dissectkit.nn.layers import spatial_output

        module = self._target(target).module
        wanted = set(layers)
        store: dict[str, Any] = {}

        def keep(name: str, out: Any) -> None:
            store[name] = pool_maps(spatial_output(first_tensor(out)), max_side).cpu()
            if len(store) == len(wanted):
                raise _Captured  # every wanted layer is captured: the rest of the network is not run

        device = next((p.device for p in module.parameters()), torch.device(self.device))
        with Capture.named(module, sorted(wanted), keep), torch.inference_mode(), suppress(_Captured):
            module(inputs.to(device))
        return store

    # -- helpers ---------------------------------------------------------------------------
    def _entry(self, target: str, layer: str) -> ChunkedEntry:
        try:
            return self.acts[(target, layer)]
        except KeyError:
            known = sorted(f"{t}/{la}" for t, la in self.acts)
            raise DataError(f"No cached activations of {target}/{layer} in this run; it has {known}.") from None

    def _target(self, target: str) -> Any:
        if target not in self.targets:
            raise DataError(f"Target '{target}' is not part of this run; it has {sorted(self.targets)}.")
        return self.targets[target]


def build_run_evidence(
    acts_entries: dict[tuple[str, str], ChunkedEntry],
    embeds_entries: dict[str, ChunkedEntry],
    probe: Any,
    targets: dict[str, Any],
    device: str = "cpu",
    skipped: dict[int, str] | None = None,
    observations: dict[str, Any] | None = None,
    n_top: int = TOP_IMAGES,
) -> RunEvidence:
    """The evidence of a finished run: top images of every cached (target, layer), computed now."""
    skipped = dict(skipped or {})
    evidence = RunEvidence(acts_entries, embeds_entries, probe, targets, device, skipped, observations=dict(observations or {}))
    for (target, layer), entry in acts_entries.items():
        top = streaming_top_images(entry, n_top, skipped)
        evidence.top.setdefault(target, {})[layer] = top.indices
        evidence.top_values.setdefault(target, {})[layer] = top.values
    return evidence


def pooled_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """The size of an ``h x w`` map after :func:`pool_maps`: each side capped at ``max_side``."""
    if max_side and max(h, w) > max_side:
        return min(h, max_side), min(w, max_side)
    return h, w


def pool_maps(maps: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """``[B, C, h, w]`` maps average-pooled so that neither side exceeds ``max_side`` (float32)."""
    import torch.nn.functional as F

    maps = maps.float()
    size = pooled_size(*maps.shape[-2:], max_side)
    if size != tuple(maps.shape[-2:]):
        maps = F.adaptive_avg_pool2d(maps, size)
    return maps


def read_error(exc: BaseException) -> str:
    """The message shown for an image that cannot be read at report time."""
    return str(exc) if isinstance(exc, DissectkitError) else f"{type(exc).__name__}: {exc}"
