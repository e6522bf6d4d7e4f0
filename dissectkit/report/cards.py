"""The HTML report's cards kept from the single pass: the ``html`` reporter's pass observer
(:class:`CardCollector`) and what it keeps (:class:`CardEvidence`; docs/reports.md, "HTML report")."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.labelling.streaming import RunningTopK
from dissectkit.report.assets import Thumbnail, make_thumbnail
from dissectkit.results.evidence import pool_maps, pooled_size
from dissectkit.results.observe import PassPlan

CARD_SLOT_BUDGET = 16_384
"""(neuron, image) pairs the pass keeps at most (maps at 32 x 32 in float16: 32 MB; thumbnails
of at most as many images): layers past the budget are left to the report."""
THUMBNAILS_PER_SLOT = 4
"""The pass thumbnails every probe image while the probe has at most this many images per card slot
(shown neuron x top image); beyond, the report reads the shown images (docs/reports.md, "HTML report")."""


@dataclass(frozen=True)
class CardRequest:
    """What the report shows per neuron: ``top_images`` images of the first ``max_cards`` neurons
    of each layer (``None``: all), as thumbnails of longest side ``thumb_size`` with heatmaps of
    longest side at most ``map_side``."""

    top_images: int
    thumb_size: int
    map_side: int
    max_cards: int | None = None


@dataclass
class LayerCardMaps:
    """One layer's kept maps: ``maps[k, j]`` is neuron ``k``'s map on probe image ``images[k, j]``
    (``-1``: empty slot); ``maps`` is ``None`` for a layer without spatial extent."""

    images: np.ndarray
    maps: np.ndarray | None

    def lookup(self, units: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (neuron, image) pairs: whether a map is kept, and the kept ``[m, h, w]`` maps."""
        if self.maps is None or len(units) == 0:
            return np.zeros(len(units), bool), np.empty((0, 1, 1), np.float32)
        inside = units < len(self.images)
        rows = self.images[np.where(inside, units, 0)]
        eq = (rows == images[:, None]) & inside[:, None]
        found = eq.any(axis=1)
        col = eq.argmax(axis=1)
        return found, self.maps[units[found], col[found]].astype(np.float32)


@dataclass
class CardEvidence:
    """What the pass kept for a :class:`CardRequest`: thumbnails by probe index and maps by (target,
    layer); and what a report made of them that depends on the images only (``jpeg``: each
    thumbnail's file, ``outlines``: each (image, concept) mask outline's PNG), so a later report of
    the same activations reads no image and encodes nothing again. ``keep``, set by the engine when
    the evidence has a place in the cache, writes :meth:`to_bytes` there (:meth:`save`)."""

    request: CardRequest
    thumbnails: dict[int, Thumbnail] = field(default_factory=dict)
    layers: dict[tuple[str, str], LayerCardMaps] = field(default_factory=dict)
    jpeg: dict[int, bytes] = field(default_factory=dict)
    outlines: dict[tuple[int, str], bytes] = field(default_factory=dict)
    keep: Callable[[bytes], None] | None = field(default=None, repr=False, compare=False)

    def serves(self, thumb_size: int, map_side: int) -> bool:
        """Whether its thumbnails and maps have these sizes."""
        return self.request.thumb_size == thumb_size and self.request.map_side == map_side

    def save(self) -> None:
        """Write it back to its cache file (nothing when it has none)."""
        if self.keep is not None:
            self.keep(self.to_bytes())

    def to_bytes(self) -> bytes:
        """An ``.npz`` file of plain arrays (no pickles): the layers' images and maps; the thumbnails'
        pixels, masks, JPEG files and the outlines, each kind concatenated into one array; a JSON index."""
        arrays: dict[str, np.ndarray] = {}
        index: dict[str, Any] = {"request": vars(self.request), "layers": [], "thumbnails": [], "jpeg": [], "outlines": []}
        for i, ((target, layer), kept) in enumerate(self.layers.items()):
            arrays[f"layer{i}_images"] = kept.images
            if kept.maps is not None:
                arrays[f"layer{i}_maps"] = kept.maps
            index["layers"].append([target, layer, kept.maps is not None])
        pixels, masks = [], []
        for row, thumb in self.thumbnails.items():
            pixels.append(np.ascontiguousarray(thumb.pixels, np.uint8).ravel())
            masks.extend(np.ascontiguousarray(m, bool).ravel() for m in thumb.masks.values())
            index["thumbnails"].append([row, list(thumb.pixels.shape), list(thumb.shown), list(thumb.masks)])
        arrays["thumb_pixels"] = np.concatenate(pixels) if pixels else np.zeros(0, np.uint8)
        arrays["thumb_masks"] = np.packbits(np.concatenate(masks)) if masks else np.zeros(0, np.uint8)
        arrays["jpeg"] = _joined(self.jpeg.values())
        index["jpeg"] = [[row, len(data)] for row, data in self.jpeg.items()]
        arrays["outlines"] = _joined(self.outlines.values())
        index["outlines"] = [[row, concept, len(data)] for (row, concept), data in self.outlines.items()]
        arrays["index"] = np.array(json.dumps(index))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: str | Path) -> CardEvidence:
        """Read what :meth:`to_bytes` wrote."""
        with np.load(path, allow_pickle=False) as data:
            index = json.loads(str(data["index"]))
            layers = {
                (target, layer): LayerCardMaps(data[f"layer{i}_images"], data[f"layer{i}_maps"] if has_maps else None)
                for i, (target, layer, has_maps) in enumerate(index["layers"])
            }
            pixels, bits = data["thumb_pixels"], data["thumb_masks"]
            jpeg, outlines = data["jpeg"].tobytes(), data["outlines"].tobytes()
        mask_values = np.unpackbits(bits).astype(bool) if bits.size else np.zeros(0, bool)
        thumbnails, at, at_mask = {}, 0, 0
        for row, shape, shown, concepts in index["thumbnails"]:
            size = int(np.prod(shape))
            thumb_masks = {}
            for c in concepts:  # masks are at the size the thumbnail is shown at
                thumb_masks[c] = mask_values[at_mask : at_mask + shown[0] * shown[1]].reshape(shown[1], shown[0])
                at_mask += shown[0] * shown[1]
            thumbnails[row] = Thumbnail(pixels[at : at + size].reshape(shape), (shown[0], shown[1]), thumb_masks)
            at += size
        return cls(CardRequest(**index["request"]), thumbnails, layers,
                   dict(_split(jpeg, [(row, n) for row, n in index["jpeg"]])),
                   dict(_split(outlines, [((row, c), n) for row, c, n in index["outlines"]])))


def _joined(parts: Any) -> np.ndarray:
    return np.frombuffer(b"".join(parts), np.uint8)


def _split(data: bytes, sizes: list[tuple[Any, int]]) -> Any:
    at = 0
    for key, n in sizes:
        yield key, data[at : at + n]
        at += n


def kept_cards(evidence: Any, thumb_size: int, map_side: int) -> CardEvidence | None:
    """The cards a run's pass kept with these sizes (``evidence.observations``), if any."""
    kept = (o for o in (evidence.observations if evidence is not None else {}).values() if isinstance(o, CardEvidence))
    return next((o for o in kept if o.serves(thumb_size, map_side)), None)


class CardCollector:
    """The pass observer of the cards: running top images with maps per (target, layer), and the
    thumbnails of the images in them."""

    def __init__(self, request: CardRequest, plan: PassPlan) -> None:
        self.request = request
        self.key = {"cards": vars(request), "budget": CARD_SLOT_BUDGET, "format": 2}
        self.units: dict[tuple[str, str], int] = {}
        self.spatial: dict[tuple[str, str], bool] = {}
        self.tops: dict[tuple[str, str], RunningTopK] = {}
        budget = CARD_SLOT_BUDGET
        for label, infos in plan.layers.items():
            for info in infos:
                units = info.n_neurons if request.max_cards is None else min(request.max_cards, info.n_neurons)
                if units <= 0 or units * request.top_images > budget:
                    continue  # past the budget: the report recomputes this layer's images
                budget -= units * request.top_images
                key = (label, info.name)
                self.units[key], self.spatial[key] = units, info.kind != "linear"
                self.tops[key] = RunningTopK(request.top_images)
        self.rows = np.empty(0, np.int64)
        self.thumbnails: dict[int, Thumbnail] = {}
        self.chunks_seen = dict.fromkeys(self.tops, 0)
        self.thumbnails_in_pass = plan.n_images <= THUMBNAILS_PER_SLOT * (CARD_SLOT_BUDGET - budget)

    @classmethod
    def for_plan(cls, request: CardRequest, plan: PassPlan) -> CardCollector | None:
        """The collector of a request (``None`` when it shows no image or no layer fits the budget)."""
        collector = cls(request, plan) if request.top_images > 0 else None
        return collector if collector is not None and collector.tops else None

    def item_function(self) -> Any:
        """Thumbnails in the data workers while that pays (:data:`THUMBNAILS_PER_SLOT`)."""
        return partial(make_thumbnail, size=self.request.thumb_size) if self.thumbnails_in_pass else None

    def chunk_started(self, layers: dict[str, list[str]]) -> None:
        for target, names in layers.items():
            for name in names:
                if (target, name) in self.chunks_seen:
                    self.chunks_seen[(target, name)] += 1

    def complete(self, total_chunks: int) -> bool:
        """Whether every tracked layer saw every chunk of the probe (nothing came from the cache)."""
        return all(seen == total_chunks for seen in self.chunks_seen.values())

    def batch_started(self, rows: list[int]) -> None:
        self.rows = np.asarray(rows, np.int64)

    def layer_output(self, target: str, layer: str, pooled: Any, output: Any) -> None:
        key = (target, layer)
        top = self.tops.get(key)
        if top is None or len(self.rows) == 0:
            return
        values = pooled[:, : self.units[key]].detach().cpu()
        top.update(values, self.rows, self._cut_maps(output) if self.spatial[key] else None)

    def _cut_maps(self, out: Any):
        """The payload of the running top: the pooled maps of chosen (neuron, batch position) pairs."""
        import torch

        from dissectkit.engine.spatial import as_float16
        from dissectkit.nn.layers import spatial_output

        maps = spatial_output(out)
        h, w = maps.shape[-2:]
        size = pooled_size(h, w, self.request.map_side)

        def cut(units: np.ndarray, positions: np.ndarray) -> np.ndarray:
            if len(units) == 0:
                return np.empty((0, *size), np.float16)
            chosen = maps[torch.as_tensor(positions, device=maps.device), torch.as_tensor(units, device=maps.device)]
            small = pool_maps(chosen[:, None], self.request.map_side)[:, 0]
            return as_float16(small).cpu().numpy()

        return cut

    def batch_finished(self, rows: list[int], values: list[Any]) -> None:
        """Keep the new thumbnails of images in some top list, drop those no longer in one."""
        if not self.thumbnails_in_pass:
            return
        shown = self._in_tops()
        for row, thumb in zip(rows, values, strict=True):
            if thumb is not None and row in shown:
                self.thumbnails[row] = thumb
        for row in [r for r in self.thumbnails if r not in shown]:
            del self.thumbnails[row]

    def _in_tops(self) -> set[int]:
        parts = [top.kept_rows().ravel().numpy() for top in self.tops.values() if top.seen]
        return set(np.unique(np.concatenate(parts)).tolist()) if parts else set()

    def result(self) -> CardEvidence:
        """What the pass kept (nothing when every chunk came from the cache: the report then fills it)."""
        tops = {key: top.result() for key, top in self.tops.items() if top.seen}
        layers = {key: LayerCardMaps(t.indices.numpy(), None if t.payload is None else t.payload.numpy())
                  for key, t in tops.items()}
        return CardEvidence(self.request, dict(self.thumbnails), layers)

    def load(self, path: Path) -> CardEvidence:
        return CardEvidence.from_file(path)
