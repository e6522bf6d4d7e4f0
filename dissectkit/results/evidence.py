"""What a finished run keeps for reporters: each neuron's top valid images (data, streamed from the
cache) and :class:`RunEvidence`, a cache-backed reader (docs/reports.md, "Top images and the run's evidence")."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

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


def streaming_top_images(entry: ChunkedEntry, n: int, skipped: Iterable[int] = ()) -> TopImages:
    """Each neuron's ``n`` most activating valid images, one chunk of the cache entry at a time
    (a :class:`~dissectkit.labelling.streaming.RunningTopK`; NaN ranks as -inf); none for a dead neuron."""
    import torch

    from dissectkit.labelling.streaming import Moments, RunningTopK

    skip = torch.tensor(sorted(set(skipped)), dtype=torch.int64)
    top, moments, k_count = RunningTopK(max(1, n)), None, 0
    for c in range(entry.n_chunks):
        values, valid = entry.read_chunk(c)
        k_count = values.shape[1]
        rows = torch.arange(entry.chunk_range(c).start, entry.chunk_range(c).stop)
        ok = valid.bool() & ~torch.isin(rows, skip)
        block = values[ok].float().nan_to_num(nan=-math.inf, posinf=math.inf)
        top.update(block, rows[ok])
        if len(block):
            moments = Moments.of(block) if moments is None else moments.add(block)
    if moments is None or n <= 0:
        return TopImages([[] for _ in range(k_count)], [[] for _ in range(k_count)])
    indices, vals, _ = top.result()
    dead = moments.constant.tolist()
    return TopImages(
        [[] if d else row for d, row in zip(dead, indices.tolist(), strict=True)],
        [[] if d else row for d, row in zip(dead, vals.tolist(), strict=True)],
    )


class _Captured(Exception):
    """Raised by the last capture hook to stop a forward pass early."""


@dataclass
class RunEvidence:
    """Cache-backed evidence of a finished run, for live reporters: explicit fields, no closures
    (docs/reports.md, "Top images and the run's evidence")."""

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
        """``{layer: Tensor[b, K, h, w]}`` of a batch of ``model_input``s (sides above ``max_side`` pooled down),
        one forward pass for all layers, stopped once every layer is captured."""
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
