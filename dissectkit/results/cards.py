"""Card evidence: the thumbnails and heatmaps of each shown neuron's top images, kept from the pass.

A reporter that shows top images per neuron (the HTML report) declares what it shows with the
optional reporter member ``card_request`` (a :class:`CardRequest`). The single cached pass then
keeps, per (target, layer), a running top-n per neuron together with the neuron's small activation
map on each of those images, and the display thumbnail of every image that is in some top list
(``dissectkit.engine.card_collector``). The result, :class:`CardEvidence`, is looked up by
(neuron, image): a pair it does not hold (chunks found in the cache, chunks of other ranks, layers
past :data:`CARD_SLOT_BUDGET`) is recomputed by the reporter from the image. So the evidence saves
a second read and forward pass of the shown images; it never changes what is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dissectkit.imaging.raw import centre_indices

if TYPE_CHECKING:
    import torch

CARD_SLOT_BUDGET = 16_384
"""(neuron, image) pairs the pass keeps at most (maps at 32 x 32 in float16: 32 MB; thumbnails
of at most as many images): layers past the budget are left to the reporter."""


@dataclass(frozen=True)
class CardRequest:
    """What a reporter shows per neuron: ``top_images`` images of the first ``max_cards`` neurons
    of each layer (``None``: all), as thumbnails of longest side ``thumb_size`` with heatmaps of
    longest side at most ``map_side``."""

    top_images: int
    thumb_size: int
    map_side: int
    max_cards: int | None = None

    @staticmethod
    def merge(requests: list[CardRequest]) -> CardRequest | None:
        """One request serving all (the most images and cards); ``None`` when there is none. The
        thumbnail and map sizes are those of the first request (a reporter asking for other sizes
        recomputes its images)."""
        if not requests:
            return None
        first = requests[0]
        cards = None if any(r.max_cards is None for r in requests) else max(r.max_cards or 0 for r in requests)
        return CardRequest(max(r.top_images for r in requests), first.thumb_size, first.map_side, cards)


@dataclass
class Thumbnail:
    """A probe image ready for display: ``pixels`` (uint8, ``H x W`` or ``H x W x 3``, longest side
    at most the thumbnail size), the size it is shown at (``shown``: ``(w, h)``, small images scaled
    up) and its concept masks at that size."""

    pixels: np.ndarray
    shown: tuple[int, int]
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def make_thumbnail(item: Any, size: int) -> Thumbnail:
    """The thumbnail of a probe item (its image and masks)."""
    from dissectkit.imaging.raw import display_image

    pil = display_image(item.image, keep_grey=True)
    scale = size / max(pil.width, pil.height)
    shown = (max(1, round(pil.width * scale)), max(1, round(pil.height * scale)))
    pil.thumbnail((size, size))
    masks = {}
    for concept, mask in (item.masks or {}).items():
        mask = np.asarray(mask)
        if mask.ndim == 2 and mask.any():
            masks[str(concept)] = nearest(mask.astype(bool, copy=False), shown)
    return Thumbnail(np.asarray(pil), shown, masks)


def nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D array resampled to ``size=(w, h)`` by nearest neighbour (``imaging.centre_indices``)."""
    h, w = mask.shape
    return mask[np.ix_(centre_indices(h, size[1]), centre_indices(w, size[0]))]


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
    """What the pass kept for a :class:`CardRequest`: thumbnails by probe index and maps by (target, layer)."""

    request: CardRequest
    thumbnails: dict[int, Thumbnail] = field(default_factory=dict)
    layers: dict[tuple[str, str], LayerCardMaps] = field(default_factory=dict)

    def serves(self, thumb_size: int, map_side: int) -> bool:
        """Whether its thumbnails and maps have these sizes."""
        return self.request.thumb_size == thumb_size and self.request.map_side == map_side

    # -- storage (the cache's ``cards`` entries) ------------------------------------------------
    def to_bytes(self) -> bytes:
        """An ``.npz`` file of plain arrays (no pickles): the layers' images and maps, each
        thumbnail's pixels and masks, and a JSON index."""
        import io
        import json

        arrays: dict[str, np.ndarray] = {}
        index = {"request": vars(self.request), "layers": [], "thumbnails": []}
        for i, ((target, layer), kept) in enumerate(self.layers.items()):
            arrays[f"layer{i}_images"] = kept.images
            if kept.maps is not None:
                arrays[f"layer{i}_maps"] = kept.maps
            index["layers"].append([target, layer, kept.maps is not None])
        for row, thumb in self.thumbnails.items():
            arrays[f"thumb{row}_pixels"] = thumb.pixels
            for j, mask in enumerate(thumb.masks.values()):
                arrays[f"thumb{row}_mask{j}"] = mask
            index["thumbnails"].append([row, list(thumb.shown), list(thumb.masks)])
        arrays["index"] = np.array(json.dumps(index))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: str) -> CardEvidence:
        """Read what :meth:`to_bytes` wrote."""
        import json

        with np.load(path, allow_pickle=False) as data:
            index = json.loads(str(data["index"]))
            layers = {
                (target, layer): LayerCardMaps(data[f"layer{i}_images"], data[f"layer{i}_maps"] if has_maps else None)
                for i, (target, layer, has_maps) in enumerate(index["layers"])
            }
            thumbnails = {
                row: Thumbnail(data[f"thumb{row}_pixels"], (shown[0], shown[1]),
                               {c: data[f"thumb{row}_mask{j}"] for j, c in enumerate(concepts)})
                for row, shown, concepts in index["thumbnails"]
            }
        return cls(CardRequest(**index["request"]), thumbnails, layers)
