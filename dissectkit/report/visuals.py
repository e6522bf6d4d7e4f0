"""The images of the neuron cards: top images, thumbnails and heatmaps, from what the pass kept, else
read again once per target (docs/reports.md, "HTML report"); an unreadable image becomes a placeholder.
What the report computes from the images (thumbnails, their files, maps, mask outlines) is added to
the run's card evidence and kept in the cache (:meth:`Visuals.keep`): a later report of the same
activations - another method, similarity or concept set - reads no image."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.context import available_cpus
from dissectkit.report.assets import (
    ImageAssets,
    Thumbnail,
    colormap_lut,
    heatmap_rgba,
    make_thumbnail,
    normalise_per_neuron,
    png_data_uri,
)
from dissectkit.report.cards import CardEvidence, LayerCardMaps, kept_cards
from dissectkit.results.evidence import read_error

MAX_MAP_SIDE = 32
"""Heatmaps are average-pooled to at most this side (the browser stretches them)."""
BATCH = 32
"""Images read and run through the target together."""
PROCESS_READS = 64
"""From this many images to read for their thumbnails alone, the report reads them in worker processes."""

# matplotlib's "inferno" (the default heatmap colormap; CC0) as colormap_lut gives it, so a report
# need not import matplotlib (0.6 s) for it; tests/test_warm_rerun.py checks it against matplotlib.
_INFERNO = bytes.fromhex(
    "00000401000501010601010802010a02020c02020e03021004031204031405041706041907051b08051d09061f0a0722"
    "0b07240c08260d08290e092b10092d110a30120a32140b34150b37160b39180c3c190c3e1b0c411c0c431e0c451f0c48"
    "210c4a230c4c240c4f260c51280b53290b552b0b572d0b592f0a5b310a5c320a5e340a5f3609613809623909633b0964"
    "3d09653e0966400a67420a68440a68450a69470b6a490b6a4a0c6b4c0c6b4d0d6c4f0d6c510e6c520e6d540f6d550f6d"
    "57106e59106e5a116e5c126e5d126e5f136e61136e62146e64156e65156e67166e69166e6a176e6c186e6d186e6f196e"
    "71196e721a6e741a6e751b6e771c6d781c6d7a1d6d7c1d6d7d1e6d7f1e6c801f6c82206c84206b85216b87216b88226a"
    "8a226a8c23698d23698f24699025689225689326679526679727669827669a28659b29649d29649f2a63a02a63a22b62"
    "a32c61a52c60a62d60a82e5fa92e5eab2f5ead305dae305cb0315bb1325ab3325ab43359b63458b73557b93556ba3655"
    "bc3754bd3853bf3952c03a51c13a50c33b4fc43c4ec63d4dc73e4cc83f4bca404acb4149cc4248ce4347cf4446d04545"
    "d24644d34743d44842d54a41d74b3fd84c3ed94d3dda4e3cdb503bdd513ade5238df5337e05536e15635e25734e35933"
    "e45a31e55c30e65d2fe75e2ee8602de9612bea632aeb6429eb6628ec6726ed6925ee6a24ef6c23ef6e21f06f20f1711f"
    "f1731df2741cf3761bf37819f47918f57b17f57d15f67e14f68013f78212f78410f8850ff8870ef8890cf98b0bf98c0a"
    "f98e09fa9008fa9207fa9407fb9606fb9706fb9906fb9b06fb9d07fc9f07fca108fca309fca50afca60cfca80dfcaa0f"
    "fcac11fcae12fcb014fcb216fcb418fbb61afbb81dfbba1ffbbc21fbbe23fac026fac228fac42afac62df9c72ff9c932"
    "f9cb35f8cd37f8cf3af7d13df7d340f6d543f6d746f5d949f5db4cf4dd4ff4df53f4e156f3e35af3e55df2e661f2e865"
    "f2ea69f1ec6df1ed71f1ef75f1f179f2f27df2f482f3f586f3f68af4f88ef5f992f6fa96f8fb9af9fc9dfafda1fcffa4"
)


def heat_lut(name: str) -> np.ndarray:
    """:func:`~dissectkit.report.assets.colormap_lut` of ``name``, the default one without matplotlib."""
    if name == "inferno":
        return np.frombuffer(_INFERNO, np.uint8).reshape(256, 3)
    return colormap_lut(name)


@dataclass
class LayerCards:
    """The top images of one (target, layer) for the units that have a card (others: ``[]``)."""

    indices: list[list[int]]
    values: list[list[float]] | None
    heat: list[list[str | None]] | None = None


class Visuals:
    """Thumbnails and heatmaps of the shown top images, computed once and shared by label sets."""

    def __init__(self, run: Any, folder: Path, opts: Any) -> None:
        self.run = run
        self.opts = opts
        self.evidence = run.evidence
        self.live = self.evidence is not None
        self.assets = ImageAssets(folder, folder.name, opts.thumb_size) if self.live and opts.top_images > 0 else None
        self.layers: dict[tuple[str, str], LayerCards] = {}
        self.cards: CardEvidence | None = kept_cards(self.evidence, opts.thumb_size, MAX_MAP_SIDE) if self.assets else None
        self.made: dict[int, tuple[Thumbnail, bytes]] = {}
        """Thumbnails (and their files) made here from images read again."""
        self.mapped: dict[tuple[str, str], LayerCardMaps] = {}
        """Layers whose maps were (partly) computed here: every shown map, for the card evidence."""
        self.encoded: dict[int, bytes] = {}
        """Thumbnail files encoded here from thumbnails the pass kept."""
        if self.cards is not None and self.assets is not None:
            self.assets.outline_png.update(self.cards.outlines)

    def prepare(self, wanted: dict[tuple[str, str], list[int]]) -> None:
        """Compute every card image: ``wanted[(target, layer)]`` = units shown with a card."""
        if self.opts.top_images <= 0:
            return
        for key, units in wanted.items():
            top = self._top(*key)
            if top is None:
                continue
            keep = set(units)
            top.indices = [row if k in keep else [] for k, row in enumerate(top.indices)]
            self.layers[key] = top
        if self.assets is None:
            return
        targets = sorted({t for t, _ in self.layers})
        for target in targets:
            self._pass(target, [layer for t, layer in self.layers if t == target])

    def _top(self, target: str, layer: str) -> LayerCards | None:
        n = self.opts.top_images
        if self.live and (target, layer) in self.evidence.acts:
            top = self.evidence.top_images(target, layer, n)
            return LayerCards(top.indices, top.values)
        stored = self.run.top_images.get(target, {}).get(layer)
        return None if stored is None else LayerCards([list(r[:n]) for r in stored], None)

    def _pass(self, target: str, layers: list[str]) -> None:
        """Thumbnails and maps of the union of the layers' shown images, each image read at most once: what
        the pass kept first, the rest read by ``opts.threads`` threads one batch ahead of the forward pass."""
        from concurrent.futures import ThreadPoolExecutor

        import torch

        n = self.opts.top_images
        images = sorted({i for layer in layers for row in self.layers[(target, layer)].indices for i in row})
        kinds = {info.name: info.kind for info in self.run.layer_infos.get(target, [])}
        layers = [layer for layer in layers if kinds.get(layer) != "linear"]  # no spatial extent: no heatmap
        slots = {layer: _slots(self.layers[(target, layer)].indices, n) for layer in layers}
        heat: dict[str, np.ndarray] = {}
        threads = self.opts.threads or max(1, min(4, available_cpus()))
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dk-images") as pool:
            unmapped = self._kept(pool, target, images, layers, slots, heat)
            needs = {i: tuple(layer for layer in layers if i in unmapped[layer]) for i in images}
            thumbs_only = [i for i in images if not needs[i] and i not in self.assets.thumbs]
            if len(thumbs_only) >= PROCESS_READS:  # many images to read for their thumbnails alone: read in processes
                self._thumbnails_in_workers(thumbs_only)
            batches = _batches([i for i in images if needs[i] or i not in self.assets.thumbs], needs)
            pending = [pool.submit(self._load, target, i, bool(needs[i])) for i in batches[0]] if batches else []
            for b in range(len(batches)):
                loaded = [f.result() for f in pending]
                pending = [pool.submit(self._load, target, i, bool(needs[i])) for i in batches[b + 1]] if b + 1 < len(batches) else []
                ok = [(index, x) for index, x in loaded if x is not None]
                wanted = list(needs[batches[b][0]])  # the same layers for every image of a batch
                if not ok or not wanted:
                    continue
                maps = self.evidence.spatial_maps(target, wanted, torch.stack([x for _, x in ok]), MAX_MAP_SIDE)
                where = {index: p for p, (index, _) in enumerate(ok)}
                for layer in wanted:
                    m = maps[layer].numpy()
                    ks, js, idx = slots[layer]
                    sel = np.fromiter((i in where for i in idx), bool, len(idx))
                    if sel.any():
                        pos = np.fromiter((where[i] for i in idx[sel]), np.int64)
                        _heat(heat, layer, len(self.layers[(target, layer)].indices), n, m.shape[-2:])[ks[sel], js[sel]] = m[pos, ks[sel]]
        lut = heat_lut(self.opts.colormap)
        for layer in layers:
            if layer in heat:
                self.layers[(target, layer)].heat = _encode(heat[layer], lut, self.opts.heatmap_alpha)
                if unmapped.get(layer):
                    self.mapped[(target, layer)] = _card_maps(heat[layer], self.layers[(target, layer)].indices, n)

    def _kept(self, pool: Any, target: str, images: list[int], layers: list[str],
              slots: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], heat: dict[str, np.ndarray]) -> dict[str, set[int]]:
        """Write the thumbnails and fill ``heat`` with the maps the run's pass kept; returns, per
        layer, the shown images whose maps it lacks."""
        cards = self.cards
        if cards is None:
            return {layer: set(slots[layer][2].tolist()) for layer in layers}
        thumbs = [(i, cards.thumbnails[i]) for i in images if i in cards.thumbnails]

        def write(index: int, thumb: Thumbnail) -> None:
            data = self.assets.add_thumbnail(index, thumb, cards.jpeg.get(index))
            if index not in cards.jpeg:
                self.encoded[index] = data

        list(pool.map(lambda pair: write(*pair), thumbs))
        unmapped = {}
        for layer in layers:
            ks, js, idx = slots[layer]
            kept = cards.layers.get((target, layer))
            found, maps = kept.lookup(ks, idx) if kept is not None else (np.zeros(len(ks), bool), None)
            if found.any():
                _heat(heat, layer, len(self.layers[(target, layer)].indices), self.opts.top_images, maps.shape[-2:])[ks[found], js[found]] = maps
            unmapped[layer] = set(idx[~found].tolist())
        return unmapped

    def _thumbnails_in_workers(self, images: list[int]) -> None:
        """Read ``images`` and make their thumbnails in worker processes (reading - decoding, or drawing
        the synthetic world's images - holds the GIL, so threads would take turns), one per CPU; their
        files are written here."""
        from torch.utils.data import DataLoader

        workers = min(len(images) // BATCH + 1, max(1, available_cpus()))
        reads = DataLoader(_ThumbnailReads(self.evidence, images, self.opts.thumb_size), batch_size=BATCH // 4,
                           num_workers=workers if workers > 1 else 0, collate_fn=list)
        for part in reads:
            for index, thumb, error in part:
                if thumb is None:
                    self.assets.fail(index, error)
                else:
                    self.made[index] = (thumb, self.assets.add_thumbnail(index, thumb))

    def _load(self, target: str, index: int, model_input: bool = True) -> tuple[int, Any]:
        """Read image ``index`` once: its thumbnail is written and, when ``model_input``, its model
        input returned (``None`` when it cannot be read any more: a placeholder is shown)."""
        try:
            item = self.evidence.read(index)
            x = self.evidence.model_input(target, item.image) if model_input else True
            thumb = make_thumbnail(item, self.opts.thumb_size)
            self.made[index] = (thumb, self.assets.add_thumbnail(index, thumb))
        except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a placeholder
            self.assets.fail(index, read_error(exc))
            return index, None
        return index, x

    def keep(self) -> None:
        """Add what this report computed from the images to the run's card evidence and keep it in
        the cache (once the pages are written: the mask outlines are made while they are)."""
        cards = self.cards
        if cards is None or self.assets is None:
            return
        outlines = {key: data for key, data in self.assets.outline_png.items() if key not in cards.outlines}
        if not (self.made or self.mapped or self.encoded or outlines):
            return
        completed = replace(  # a copy: the run's evidence stays what its pass kept
            cards,
            thumbnails={**cards.thumbnails, **{index: thumb for index, (thumb, _) in self.made.items()}},
            layers={**cards.layers, **self.mapped},
            jpeg={**cards.jpeg, **self.encoded, **{index: data for index, (_, data) in self.made.items()}},
            outlines={**cards.outlines, **outlines},
        )
        self.made, self.mapped, self.encoded = {}, {}, {}
        completed.save()

    def images(self, target: str, layer: str, unit: int, concepts: list[str]) -> list[dict[str, Any]]:
        """The card images of one neuron: id, value, thumbnail (or placeholder), heatmap, outlines."""
        top = self.layers.get((target, layer))
        if self.assets is None or top is None or unit >= len(top.indices):
            return []
        out = []
        for j, index in enumerate(top.indices[unit]):
            img: dict[str, Any] = {
                "index": index, "id": self.run.probe_ids[index],
                "value": None if top.values is None else top.values[unit][j],
                "src": None, "w": self.opts.thumb_size, "h": self.opts.thumb_size,
                "heat": None, "masks": [], "outlines": [], "error": None,
            }
            if index in self.assets.errors:
                img["error"] = self.assets.errors[index]
            elif index in self.assets.thumbs:
                img["src"], img["w"], img["h"] = self.assets.thumbs[index]
                img["heat"] = top.heat[unit][j] if top.heat is not None else None
                img["masks"] = sorted(self.assets.masks.get(index, {}))
                img["outlines"] = [{"concept": c, "src": src} for c in concepts
                                   if (src := self.assets.outline(index, c)) is not None]
            out.append(img)
        return out


class _ThumbnailReads:
    """A dataset of ``(index, thumbnail, None)`` of some probe images (``(index, None, error)`` for an
    image that cannot be read any more)."""

    def __init__(self, evidence: Any, images: list[int], size: int) -> None:
        self.evidence, self.images, self.size = evidence, images, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, j: int) -> tuple[int, Thumbnail | None, str | None]:
        index = self.images[j]
        try:
            return index, make_thumbnail(self.evidence.read(index), self.size), None
        except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a placeholder
            return index, None, read_error(exc)


def _batches(images: list[int], needs: dict[int, tuple[str, ...]]) -> list[list[int]]:
    """Batches of at most ``BATCH`` images needing the same layers (so a batch that only shallow
    layers show stops its forward pass early, and one that no mapped layer shows skips it)."""
    out: list[list[int]] = []
    for i in sorted(images, key=lambda i: (needs[i], i)):
        if out and needs[out[-1][0]] == needs[i] and len(out[-1]) < BATCH:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _heat(heat: dict[str, np.ndarray], layer: str, units: int, n: int, side: tuple[int, int]) -> np.ndarray:
    """The ``[K, n, h, w]`` heatmap array of a layer (NaN: not shown), created on first use."""
    if layer not in heat:
        heat[layer] = np.full((units, n, *side), np.nan, np.float32)
    return heat[layer]


def _card_maps(heat: np.ndarray, indices: list[list[int]], n: int) -> LayerCardMaps:
    """The shown maps of a layer (``[K, n, h, w]``, NaN: none) as card evidence (float16, as the pass keeps them)."""
    images = np.full((len(indices), n), -1, np.int64)
    for k, row in enumerate(indices):
        images[k, : len(row[:n])] = row[:n]
    shown = ~np.isnan(heat).all(axis=(2, 3))
    images[~shown] = -1
    return LayerCardMaps(images, np.nan_to_num(heat).astype(np.float16))


def _slots(indices: list[list[int]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat ``(unit, rank, image)`` arrays of every shown (neuron, image) pair."""
    pairs = [(k, j, i) for k, row in enumerate(indices) for j, i in enumerate(row[:n])]
    ks, js, idx = (np.asarray([p[c] for p in pairs], np.int64) for c in range(3))
    return ks, js, idx


def _encode(heat: np.ndarray, lut: np.ndarray, alpha: float) -> list[list[str | None]]:
    """``[K, n, h, w]`` maps (NaN = not shown) -> data URIs, normalised per neuron over its shown maps."""
    shown = ~np.isnan(heat).all(axis=(2, 3))
    rgba = heatmap_rgba(normalise_per_neuron(heat), lut, alpha)
    return [[png_data_uri(rgba[k, j]) if shown[k, j] else None for j in range(heat.shape[1])] for k in range(heat.shape[0])]
