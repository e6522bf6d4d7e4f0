"""Card evidence collected during the single pass (what it is: ``dissectkit.results.cards``).

At each hooked layer the collector updates a running top-n per neuron over the valid images of
the batch (the order of ``run_evidence``'s top images: activation descending, ties by the lower
probe index, on the same float32 values the cache stores) and keeps the neuron's small map on each
image that enters, cut out of the layer output on the device. After each batch it keeps the
thumbnails (made in the data workers while that pays, see :data:`THUMBNAILS_PER_SLOT`) of the
images that are in some top list and drops the others, so memory stays within
:data:`dissectkit.results.cards.CARD_SLOT_BUDGET` pairs and as many images.

A collection that saw every chunk is saved in the cache (``cards/<key>/cards.npz``, keyed by the
activation entries and the request), so a later run that finds every chunk cached (another
method, concept set or dissector over the same target and probe) reports without reading images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dissectkit.engine.cache import Cache, atomic_write_bytes, content_key
from dissectkit.engine.distributed import World
from dissectkit.engine.resolve import Resolved, TargetSlot
from dissectkit.engine.spatial import as_float16
from dissectkit.host.contract import reporter_card_request
from dissectkit.labelling.streaming import RunningTopK
from dissectkit.results.cards import (
    CARD_SLOT_BUDGET,
    CardEvidence,
    CardRequest,
    LayerCardMaps,
    Thumbnail,
    pool_maps,
    pooled_size,
)

if TYPE_CHECKING:
    from dissectkit.engine.extract import Extraction

log = logging.getLogger(__name__)

THUMBNAILS_PER_SLOT = 4
"""The pass makes every probe image's thumbnail (in the data workers) while the probe has at most
this many images per card slot (shown neuron x top image); beyond, the report reads the shown
images for their thumbnails. Measured on the quickstart: a thumbnail costs about 7 % of reading and
preprocessing an image, and about half of a run's card slots show distinct images, so thumbnails
for every image pay up to about 7 images per slot; 4 keeps a margin."""


def requested(res: Resolved, world: World) -> CardRequest | None:
    """What the run's reporters show per neuron, merged (``None``: nothing, or not the main process)."""
    if not world.is_main:
        return None
    request = CardRequest.merge([r for rep in res.reporters.values() if (r := reporter_card_request(rep)) is not None])
    return request if request is not None and request.top_images > 0 else None


class CardCollector:
    """Running top images with maps per (target, layer), and the thumbnails of the images in them."""

    def __init__(self, request: CardRequest, targets: dict[str, TargetSlot], n_images: int) -> None:
        self.request = request
        self.units: dict[tuple[str, str], int] = {}
        self.spatial: dict[tuple[str, str], bool] = {}
        self.tops: dict[tuple[str, str], RunningTopK] = {}
        budget = CARD_SLOT_BUDGET
        for label, slot in targets.items():
            for info in slot.layers:
                units = info.n_neurons if request.max_cards is None else min(request.max_cards, info.n_neurons)
                if units <= 0 or units * request.top_images > budget:
                    continue  # past the budget: the reporter recomputes this layer's images
                budget -= units * request.top_images
                key = (label, info.name)
                self.units[key], self.spatial[key] = units, info.kind != "linear"
                self.tops[key] = RunningTopK(request.top_images)
        self.rows = np.empty(0, np.int64)
        self.thumbnails: dict[int, Thumbnail] = {}
        self.chunks_seen = dict.fromkeys(self.tops, 0)
        slots = CARD_SLOT_BUDGET - budget
        self.thumbnails_in_pass = n_images <= THUMBNAILS_PER_SLOT * slots

    @classmethod
    def for_run(cls, res: Resolved, world: World) -> CardCollector | None:
        """The collector of a run whose reporters ask for cards (on the main process only)."""
        request = requested(res, world)
        collector = cls(request, res.targets, len(res.probe)) if request is not None else None
        return collector if collector is not None and collector.tops else None

    # -- during the pass ---------------------------------------------------------------------
    def chunk_started(self, layers: dict[str, list[str]]) -> None:
        """A chunk whose pass hooks ``layers[target]`` begins (to know whether every chunk was seen)."""
        for target, names in layers.items():
            for name in names:
                if (target, name) in self.chunks_seen:
                    self.chunks_seen[(target, name)] += 1

    def complete(self, total_chunks: int) -> bool:
        """Whether every tracked layer saw every chunk of the probe (nothing came from the cache)."""
        return all(seen == total_chunks for seen in self.chunks_seen.values())

    def start_batch(self, rows: list[int]) -> None:
        """The probe indices of the valid images of the batch about to go through the targets."""
        self.rows = np.asarray(rows, np.int64)

    def observe(self, target: str, layer: str, pooled: Any, out: Any) -> None:
        """At a layer's hook: ``pooled`` ``[B, K]`` (the values cached) and the raw output ``out``."""
        key = (target, layer)
        top = self.tops.get(key)
        if top is None or len(self.rows) == 0:
            return
        units = self.units[key]
        values = pooled[:, :units].detach().cpu()
        top.update(values, self.rows, self._cut_maps(out) if self.spatial[key] else None)

    def _cut_maps(self, out: Any):
        """The payload of the running top: the pooled maps of chosen (neuron, batch position) pairs."""
        import torch

        from dissectkit.nn.layers import spatial_output

        maps = spatial_output(out)
        size = pooled_size(*maps.shape[-2:], self.request.map_side)

        def cut(units: np.ndarray, positions: np.ndarray) -> np.ndarray:
            if len(units) == 0:
                return np.empty((0, *size), np.float16)
            chosen = maps[torch.as_tensor(positions, device=maps.device), torch.as_tensor(units, device=maps.device)]
            small = pool_maps(chosen[:, None], self.request.map_side)[:, 0]
            return as_float16(small).cpu().numpy()

        return cut

    def keep_thumbnails(self, rows: list[int], thumbnails: list[Thumbnail | None]) -> None:
        """After a batch: keep the new thumbnails of images in some top list, drop those no longer in one."""
        if not self.thumbnails_in_pass:
            return
        shown = self._in_tops()
        for row, thumb in zip(rows, thumbnails, strict=True):
            if thumb is not None and row in shown:
                self.thumbnails[row] = thumb
        for row in [r for r in self.thumbnails if r not in shown]:
            del self.thumbnails[row]

    def _in_tops(self) -> set[int]:
        parts = [top.kept_rows().ravel().numpy() for top in self.tops.values() if top.seen]
        return set(np.unique(np.concatenate(parts)).tolist()) if parts else set()

    # -- the result ----------------------------------------------------------------------------
    def result(self) -> CardEvidence:
        tops = {key: top.result() for key, top in self.tops.items() if top.seen}
        layers = {key: LayerCardMaps(t.indices.numpy(), None if t.payload is None else t.payload.numpy())
                  for key, t in tops.items()}
        return CardEvidence(self.request, dict(self.thumbnails), layers)


# --------------------------------------------------------------------------- kept between runs
def cards_path(cache: Cache, ex: Extraction, request: CardRequest) -> Path:
    """Where the complete card evidence of these activation entries and this request is kept."""
    key = content_key("cards", sorted(e.root.name for e in ex.acts.values()), vars(request), CARD_SLOT_BUDGET)
    return cache.root / "cards" / key / "cards.npz"


def settle_cards(res: Resolved, cache: Cache, ex: Extraction, world: World) -> CardEvidence | None:
    """The run's card evidence: a complete collection is saved in the cache and used; otherwise
    (a cached or resumed run) the one a complete earlier run saved for the same activations, when
    it can be read; otherwise what was collected (the reporter recomputes the rest)."""
    request = requested(res, world)
    if request is None:
        return None
    path = cards_path(cache, ex, request)
    if ex.cards is not None and ex.cards_complete:
        try:
            atomic_write_bytes(path, ex.cards.to_bytes())
        except OSError as exc:  # a full or read-only cache only costs the next run its head start
            log.warning("Could not keep the report images in the cache (%s): %s", path, exc)
        return ex.cards
    if path.is_file():
        try:
            return CardEvidence.from_file(str(path))
        except (OSError, ValueError, KeyError) as exc:  # a damaged file is only a lost head start
            log.warning("Ignoring the cached report images %s (%s); the report reads the images again.", path, exc)
    return ex.cards
