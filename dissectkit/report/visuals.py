"""The images of the neuron cards: top images, thumbnails and heatmaps, from what the pass kept, else
read again once per target (docs/reports.md, "HTML report"); an unreadable image becomes a placeholder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.context import available_cpus
from dissectkit.report.assets import (
    ImageAssets,
    colormap_lut,
    heatmap_rgba,
    normalise_per_neuron,
    png_data_uri,
)
from dissectkit.report.cards import kept_cards
from dissectkit.results.evidence import read_error

MAX_MAP_SIDE = 32
"""Heatmaps are average-pooled to at most this side (the browser stretches them)."""
BATCH = 32
"""Images read and run through the target together."""


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
            batches = _batches([i for i in images if needs[i] or i not in self.assets.thumbs], needs)
            pending = [pool.submit(self._load, target, i) for i in batches[0]] if batches else []
            for b in range(len(batches)):
                loaded = [f.result() for f in pending]
                pending = [pool.submit(self._load, target, i) for i in batches[b + 1]] if b + 1 < len(batches) else []
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
        lut = colormap_lut(self.opts.colormap)
        for layer in layers:
            if layer in heat:
                self.layers[(target, layer)].heat = _encode(heat[layer], lut, self.opts.heatmap_alpha)

    def _kept(self, pool: Any, target: str, images: list[int], layers: list[str],
              slots: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], heat: dict[str, np.ndarray]) -> dict[str, set[int]]:
        """Write the thumbnails and fill ``heat`` with the maps the run's pass kept; returns, per
        layer, the shown images whose maps it lacks."""
        cards = kept_cards(self.evidence, self.opts.thumb_size, MAX_MAP_SIDE)
        if cards is None:
            return {layer: set(slots[layer][2].tolist()) for layer in layers}
        thumbs = [(i, cards.thumbnails[i]) for i in images if i in cards.thumbnails]
        list(pool.map(lambda pair: self.assets.add_thumbnail(*pair), thumbs))
        unmapped = {}
        for layer in layers:
            ks, js, idx = slots[layer]
            kept = cards.layers.get((target, layer))
            found, maps = kept.lookup(ks, idx) if kept is not None else (np.zeros(len(ks), bool), None)
            if found.any():
                _heat(heat, layer, len(self.layers[(target, layer)].indices), self.opts.top_images, maps.shape[-2:])[ks[found], js[found]] = maps
            unmapped[layer] = set(idx[~found].tolist())
        return unmapped

    def _load(self, target: str, index: int) -> tuple[int, Any]:
        """Read image ``index`` once: its thumbnail is written and its model input returned
        (``None`` when it cannot be read any more: a placeholder is shown)."""
        try:
            item = self.evidence.read(index)
            x = self.evidence.model_input(target, item.image)
            self.assets.add(index, item)
        except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a placeholder
            self.assets.fail(index, read_error(exc))
            return index, None
        return index, x

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
