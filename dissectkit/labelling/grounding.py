"""Grounding: does a neuron fire where its label's finding is? (docs/methods.md, "Grounding").

For every labelled neuron whose top-1 concept has masks in the probe, over the neuron's
``top_images`` most activating annotated images (by pooled activation):

- ``grounding_iou``: ``sum |M & L| / sum |M | L|`` where ``M`` is the neuron's map upsampled
  bilinearly to the comparison grid and thresholded at Network Dissection's per-neuron level ``T_k``
  (:class:`~dissectkit.labelling.spatial_grid.QuantileGrid`: the same rule, computed once per layer
  over every annotated image) and ``L`` the union of the concept's masks on that grid;
- ``pointing``: the share of those images on which the map's peak falls inside ``L`` (an image
  without the concept is a miss).

Neurons whose label has no masks, layers without spatial extent and probes without masks get
``None`` with the reason in ``grounding_note``. The thresholds and the annotated images are
memoised per spatial source (``SpatialSource.key``), so every method and dissector labelling a
layer shares them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from dissectkit.base.params import Params
from dissectkit.labelling.columns import Column, LabelContext
from dissectkit.labelling.spatial_grid import QuantileGrid, derived, upsample

if TYPE_CHECKING:
    import numpy as np
    import torch

    from dissectkit.base.types import Concept
    from dissectkit.labelling.evidence import Evidence

__all__ = ["GROUNDING", "GroundingParams", "MaskIndex", "PointingGame", "grid_union", "layer_grounding", "mask_classes_for", "mask_index"]

NO_MASKS = "no masks: the probe has no per-concept masks or boxes"
NO_ANNOTATED = "no probe image carries masks"
NO_EXTENT = "the layer has no spatial extent (1 x 1 maps)"
MISALIGNED = "the spatial maps and the activations cover different images"
_MEMO_SIZE = 8
_THRESHOLD_BATCH = 16
"""Sampled images upsampled together for the thresholds (their grid maps bound the memory: 16 x K x grid)."""
COLUMNS = ("grounding_iou", "grounding_above_chance", "pointing", "pointing_above_chance", "grounding_note")


class GroundingParams(Params):
    """Settings of the ``grounding`` column group (``output.columns.grounding``)."""

    quantile: float = Field(0.005, gt=0, lt=1, description="Network Dissection's quantile: fraction of grid pixels above each neuron's threshold")
    resolution: int | None = Field(112, ge=1, description="longer side of the comparison grid (netdissect's); null: the masks' own size")
    max_memory_mb: float = Field(512.0, gt=0, description="bound on the threshold computation's memory (netdissect's)")
    top_images: int = Field(10, ge=1, description="the neuron's most activating annotated images compared with the masks")
    pointing_tolerance: float = Field(
        0.5, ge=0, description="the pointing game's tolerance, in cells of the layer's map: a hit when the label's masks "
        "reach within this many cells of the centre of the cell the peak falls in, on each axis (0.5: that cell, as fine "
        "as the map can point; 0: the peak pixel itself)")
    threshold_images: int | None = Field(
        256, ge=1, description="annotated images the thresholds are estimated from (every k-th, evenly over the "
        "probe, when there are more); null: all of them, as Network Dissection")
    mask_classes: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="concept text, subcategory or category -> the probe's mask class(es) that show it "
        "(default: the mask class named like the concept, case-insensitive)",
    )


def mask_classes_for(concept: Concept | str, available: Iterable[str], mapping: Mapping[str, str | list[str]] | None = None) -> list[str]:
    """The probe's mask classes showing ``concept``: ``mapping[text]``, else ``mapping[subcategory]``,
    else ``mapping[category]``, else the class named like the concept; matched case-insensitively
    against ``available`` (the classes the probe's masks use). Empty when none is available."""
    text = concept if isinstance(concept, str) else concept.text
    keys = [text] if isinstance(concept, str) else [text, concept.subcategory, concept.category]
    by_lower = {a.lower(): a for a in available}
    mapping = mapping or {}
    for key in keys:
        if key and key in mapping:
            wanted = mapping[key]
            names = [wanted] if isinstance(wanted, str) else list(wanted)
            return list(dict.fromkeys(by_lower[n.lower()] for n in names if n.lower() in by_lower))
    return [by_lower[text.lower()]] if text.lower() in by_lower else []


@dataclass
class MaskIndex:
    """The masks of a spatial stream surveyed once: how many rows it has, which are annotated (a
    non-empty mask dict, as Network Dissection counts them), and per mask class the rows that show it
    with their masks sampled to the comparison grid (nearest, as netdissect; every image to the grid
    of the first annotated one), bit-packed. Kept with the cached masks (one for all the layers of a
    target), so a later run reads it instead of unpacking every mask again."""

    annotated: np.ndarray
    grid: tuple[int, int]
    rows: dict[str, np.ndarray]
    bits: dict[str, np.ndarray]

    @property
    def n_rows(self) -> int:
        return len(self.annotated)

    @property
    def classes(self) -> set[str]:
        return set(self.rows)

    def classes_at(self, row: int) -> list[str]:
        """The mask classes of one row."""
        import numpy as np

        return [c for c, have in self.rows.items() if len(have) and have[min(int(np.searchsorted(have, row)), len(have) - 1)] == row]

    def union(self, classes: Iterable[str], rows: np.ndarray) -> np.ndarray:
        """``[len(rows), gh * gw]`` bool: the union of ``classes``' grid masks on each of ``rows``."""
        import numpy as np

        size = self.grid[0] * self.grid[1]
        out = np.zeros((len(rows), size), dtype=bool)
        for c in classes:
            have = self.rows.get(c)
            if have is None or not len(have):
                continue
            pos = np.minimum(np.searchsorted(have, rows), len(have) - 1)
            hit = have[pos] == rows
            if hit.any():
                out[hit] |= np.unpackbits(self.bits[c][pos[hit]], axis=1, count=size).astype(bool)
        return out

    def to_tensors(self) -> dict[str, torch.Tensor]:
        import json

        import torch

        names = sorted(self.rows)
        out = {"annotated": torch.from_numpy(self.annotated.astype("uint8")),
               "grid": torch.tensor(self.grid, dtype=torch.int64),
               "classes": torch.frombuffer(bytearray(json.dumps(names).encode()), dtype=torch.uint8)}
        for i, c in enumerate(names):
            out[f"rows{i}"], out[f"bits{i}"] = torch.from_numpy(self.rows[c]), torch.from_numpy(self.bits[c])
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> MaskIndex:
        import json

        names = json.loads(bytes(t["classes"].numpy()).decode())
        gh, gw = (int(x) for x in t["grid"].tolist())
        return cls(t["annotated"].numpy().astype(bool), (gh, gw),
                   {c: t[f"rows{i}"].numpy() for i, c in enumerate(names)},
                   {c: t[f"bits{i}"].numpy() for i, c in enumerate(names)})


_MEMO: OrderedDict[tuple[Any, ...], Any] = OrderedDict()


def _memo(key: tuple[Any, ...] | None, compute: Any) -> Any:
    """``compute()`` memoised under ``key`` (the last few only; ``None``: not memoised)."""
    if key is None:
        return compute()
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    value = _MEMO[key] = compute()
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return value


def _source_key(evidence: Evidence) -> str | None:
    """The content key of the evidence's spatial stream when it has one (the engine's ``SpatialSource``)."""
    key = getattr(evidence.spatial_maps, "key", None)
    return key if isinstance(key, str) else None


def mask_index(evidence: Evidence, params: GroundingParams) -> MaskIndex:
    """:class:`MaskIndex` of ``evidence.spatial_maps`` on ``params``' grid (memoised per set of masks;
    kept with the cached masks when the stream is the engine's)."""

    def build() -> dict[str, torch.Tensor]:
        import numpy as np

        from dissectkit.imaging.raw import centre_indices

        assert evidence.spatial_maps is not None
        grid_of = QuantileGrid(params, who="grounding").grid
        flags: list[bool] = []
        found: dict[tuple[int, int], list[tuple[int, str, np.ndarray]]] = {}  # per mask size: (row, class, packed)
        grid: tuple[int, int] | None = None
        stored = getattr(evidence.spatial_maps, "packed_rows", None)
        if callable(stored):  # the engine's cache: the masks as stored, no map read
            for row in stored():
                flags.append(bool(row))
                for c, h, w, packed in row or ():
                    grid = grid or grid_of(h, w)
                    found.setdefault((h, w), []).append((len(flags) - 1, c, packed))
        else:
            for batch in evidence.spatial_maps():
                for masks in batch.masks:
                    flags.append(bool(masks))
                    for c, m in (masks or {}).items():
                        m = np.asarray(m, dtype=bool)
                        grid = grid or grid_of(*m.shape)
                        found.setdefault(m.shape, []).append((len(flags) - 1, c, np.packbits(m.reshape(-1))))
        grid = grid or (1, 1)
        rows: dict[str, list[int]] = {}
        bits: dict[str, list[np.ndarray]] = {}
        for (H, W), entries in found.items():
            iy, ix = centre_indices(H, grid[0]), centre_indices(W, grid[1])
            for start in range(0, len(entries), 512):  # sampled to the grid a block at a time
                block = entries[start : start + 512]
                packed = np.stack([p for _, _, p in block])
                if grid != (H, W):
                    if W % 8 == 0:  # rows are whole bytes: pick the grid's rows before unpacking
                        full = np.unpackbits(packed.reshape(len(block), H, W // 8)[:, iy], axis=2)
                    else:
                        full = np.unpackbits(packed, axis=1, count=H * W).reshape(-1, H, W)[:, iy]
                    packed = np.packbits(full[:, :, ix].reshape(len(block), -1), axis=1)
                for (row, c, _), b in zip(block, packed, strict=True):
                    rows.setdefault(c, []).append(row)
                    bits.setdefault(c, []).append(b)
        order = {c: np.argsort(r, kind="stable") for c, r in rows.items()}  # rows sorted per class
        return MaskIndex(np.array(flags, dtype=bool), grid,
                         {c: np.array(r, dtype=np.int64)[order[c]] for c, r in rows.items()},
                         {c: np.stack(b)[order[c]] for c, b in bits.items()}).to_tensors()

    parts = {"resolution": params.resolution, "version": 1}
    key = getattr(evidence.spatial_maps, "masks_key", None) or _source_key(evidence)
    return _memo(None if key is None else ("index", key, params.resolution),  # type: ignore[no-any-return]
                 lambda: MaskIndex.from_tensors(derived(evidence.spatial_maps, "masks-index", parts, build)))


def _map_size(evidence: Evidence) -> tuple[int, int]:
    """``(h, w)`` of the layer's spatial maps (``(1, 1)`` without any)."""
    assert evidence.spatial_maps is not None
    size = getattr(evidence.spatial_maps, "map_size", None)
    if size is not None:
        return tuple(size)  # type: ignore[return-value]
    for batch in evidence.spatial_maps():
        return tuple(batch.maps.shape[-2:])  # type: ignore[return-value]
    return (1, 1)


def _thresholds(evidence: Evidence, params: GroundingParams, index: MaskIndex, device: str):
    """Network Dissection's ``T [K]`` of the layer: memoised per spatial source and setting, and kept
    with the cached maps (:func:`~dissectkit.labelling.spatial_grid.derived`), so a layer's thresholds
    are computed once whatever the methods, dissectors and runs that read them. Estimated from every
    k-th annotated image when there are more than ``threshold_images``: only their maps are read."""
    import dataclasses

    import numpy as np
    import torch

    from dissectkit.labelling.evidence import SpatialBatch

    annotated = np.flatnonzero(index.annotated)
    stride = 1
    if params.threshold_images is not None and len(annotated) > params.threshold_images:
        stride = -(-len(annotated) // params.threshold_images)
    parts = {"quantile": params.quantile, "resolution": params.resolution, "max_memory_mb": params.max_memory_mb,
             "stride": stride}
    key = _source_key(evidence)
    sample = annotated[::stride].tolist()

    def sampled() -> Iterator[SpatialBatch]:
        """The sampled images' maps with their masks on the grid (the grid of the grid is the grid)."""
        batch: list[tuple[int, torch.Tensor]] = []
        for pair in [*_maps_at(evidence, sample), None]:
            if pair is not None:
                batch.append(pair)
            if batch and (pair is None or len(batch) == _THRESHOLD_BATCH):
                masks = [{c: index.union([c], np.array([r]))[0].reshape(index.grid) for c in index.classes_at(r)}
                         for r, _ in batch]
                yield SpatialBatch(torch.stack([m for _, m in batch]), masks)
                batch = []

    def compute():
        quantiles = QuantileGrid(params, who="grounding")
        return derived(evidence.spatial_maps, "thresholds", parts, lambda: {
            "T": quantiles.layer_thresholds(dataclasses.replace(evidence, spatial_maps=sampled), device)[0]})["T"]

    return _memo(None if key is None else ("thresholds", key, *parts.values()), compute)


def _top_rows(evidence: Evidence, annotated: torch.Tensor, n: int) -> torch.Tensor:
    """Each neuron's ``n`` most activating annotated rows ``[K, m]`` (the run's tie rule)."""
    import torch

    from dissectkit.labelling.streaming import RunningTopK

    top = RunningTopK(n)
    start = 0
    for block in evidence.iter_activations():
        rows = torch.arange(start, start + block.shape[0])
        keep = annotated[start : start + block.shape[0]]
        if bool(keep.any()):
            top.update(block[keep], rows[keep])
        start += block.shape[0]
    return top.result().indices


def grid_union(masks: dict[str, np.ndarray], classes: list[str], size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """The union of ``classes``' masks of one image sampled to ``grid`` (nearest, as netdissect)."""
    import numpy as np

    from dissectkit.imaging.raw import centre_indices

    out = np.zeros(grid, dtype=bool)
    iy, ix = centre_indices(size[0], grid[0]), centre_indices(size[1], grid[1])
    for c in classes:
        if c in masks:
            out |= np.asarray(masks[c], dtype=bool)[np.ix_(iy, ix)]
    return out


def _maps_at(evidence: Evidence, rows: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(row, maps [K, h, w])`` of the stream's ``rows`` (sorted): read alone where the stream can
    (the engine's ``SpatialSource.maps_at``), else picked from a pass over it."""
    import torch

    assert evidence.spatial_maps is not None
    read = getattr(evidence.spatial_maps, "maps_at", None)
    if callable(read):
        for start in range(0, len(rows), 256):
            part = rows[start : start + 256]
            yield from zip(part, read(part), strict=True)
        return
    wanted, row = set(rows), 0
    for batch in evidence.spatial_maps():
        maps = torch.as_tensor(batch.maps)
        for b in range(maps.shape[0]):
            if row + b in wanted:
                yield row + b, maps[b]
        row += maps.shape[0]


@dataclass(frozen=True)
class PointingGame:
    """Where a peak is a hit (the pointing game's tolerance, ``GroundingParams.pointing_tolerance``):
    with tolerance ``t > 0``, a box of ``t`` cells of the layer's map on each side of the centre of the
    cell the peak falls in (``t = 0.5``: that cell); with ``t = 0``, the peak pixel itself."""

    grid: tuple[int, int]
    map_size: tuple[int, int]
    tolerance: float

    def _bounds(self, g: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        centre, half = (np.arange(m) + 0.5) * g / m, self.tolerance * g / m
        lo = np.clip(np.round(centre - half), 0, g - 1).astype(np.int64)
        return lo, np.maximum(np.clip(np.round(centre + half), 0, g).astype(np.int64), lo + 1)

    def near(self, L: np.ndarray) -> np.ndarray:
        """``L [..., gh, gw]`` -> ``[..., places]``: for each place a peak may be (a cell of the map; a
        grid pixel when ``t = 0``), whether ``L`` is within the tolerance of it."""
        import numpy as np

        lead = L.shape[:-2]
        if self.tolerance == 0:
            return L.reshape(*lead, -1)
        (y0, y1), (x0, x1) = (self._bounds(g, m) for g, m in zip(self.grid, self.map_size, strict=True))
        if all(lo[0] == 0 and hi[-1] == g and (lo[1:] == hi[:-1]).all()
               for lo, hi, g in ((y0, y1, self.grid[0]), (x0, x1, self.grid[1]))):  # the boxes tile the grid: one reduction per axis
            any_y = np.logical_or.reduceat(L, y0, axis=-2)
            return np.logical_or.reduceat(any_y, x0, axis=-1).reshape(*lead, -1)
        c = np.zeros((*lead, self.grid[0] + 1, self.grid[1] + 1), dtype=np.int32)
        c[..., 1:, 1:] = L.cumsum(-2, dtype=np.int32).cumsum(-1, dtype=np.int32)
        box = (c[..., y1[:, None], x1] - c[..., y0[:, None], x1] - c[..., y1[:, None], x0] + c[..., y0[:, None], x0])
        return (box > 0).reshape(*lead, -1)

    @property
    def places(self) -> int:
        """How many places a peak may be (the length of :meth:`near`'s last axis)."""
        return self.grid[0] * self.grid[1] if self.tolerance == 0 else self.map_size[0] * self.map_size[1]

    def place(self, peak: int) -> int:
        """The index in :meth:`near` of a peak at flattened grid pixel ``peak``."""
        if self.tolerance == 0:
            return peak
        (gh, gw), (h, w) = self.grid, self.map_size
        py, px = divmod(peak, gw)
        return (py * h // gh) * w + px * w // gw


@dataclass
class _Chance:
    """Where a concept usually is: for one set of mask classes, the share of the annotated images
    whose union mask covers each grid pixel (``P``, flattened) or is within the pointing tolerance of
    each place a peak may be (``hit``, as :meth:`PointingGame.near`); ``area``: the union's mean area
    in grid pixels."""

    P: np.ndarray
    hit: np.ndarray
    area: float


def _chance(index: MaskIndex, classes: tuple[str, ...], game: PointingGame) -> _Chance:
    """:class:`_Chance` of ``classes`` over the annotated images of ``index`` (those without any of
    the classes add zeros), in blocks of rows to bound the memory."""
    import numpy as np

    rows = np.unique(np.concatenate([index.rows.get(c, np.zeros(0, np.int64)) for c in classes]))
    count = max(int(index.annotated.sum()), 1)
    P = np.zeros(index.grid[0] * index.grid[1])
    hit = np.zeros(game.places)
    for start in range(0, len(rows), 1024):
        L = index.union(classes, rows[start : start + 1024])
        P += L.sum(0)
        hit += game.near(L.reshape(-1, *index.grid)).sum(0)
    return _Chance(P / count, hit / count, float(P.sum() / count))


def _chances(evidence: Evidence, index: MaskIndex, game: PointingGame, groups: list[tuple[str, ...]],
             params: GroundingParams) -> dict[tuple[str, ...], _Chance]:
    """:class:`_Chance` of each set of mask classes: those of every single class computed together
    once per layer and setting and kept with the cached maps; unions of several classes computed
    (and memoised) when a mapping asks for them."""
    import torch

    key = _source_key(evidence)
    parts = {"resolution": params.resolution, "pointing_tolerance": params.pointing_tolerance, "version": 1}

    def singles() -> dict[tuple[str, ...], _Chance]:
        names = sorted(index.classes)

        def compute() -> dict[str, torch.Tensor]:
            out = {}
            for i, c in enumerate(names):
                ch = _chance(index, (c,), game)
                out[f"P{i}"], out[f"hit{i}"] = torch.from_numpy(ch.P), torch.from_numpy(ch.hit)
            return out

        got = derived(evidence.spatial_maps, "grounding-chance", parts, compute)
        return {(c,): _Chance(got[f"P{i}"].numpy(), got[f"hit{i}"].numpy(), float(got[f"P{i}"].sum())) for i, c in enumerate(names)}

    one = _memo(None if key is None else ("chance", key, *parts.values()), singles)
    return {g: one[g] if g in one else _memo(None if key is None else ("chance", key, *parts.values(), g),
                                              lambda g=g: _chance(index, g, game)) for g in groups}


def layer_grounding(evidence: Evidence, labels: list[str | None], concepts: Iterable[Concept],
                    params: GroundingParams | None = None, device: str | None = None) -> dict[str, list[Any]]:
    """The grounding columns of one layer: ``labels[k]`` is neuron k's top-1 concept (``None``: none)."""
    import numpy as np
    import torch

    params = params or GroundingParams()
    K = len(labels)
    out: dict[str, list[Any]] = {name: [None] * K for name in COLUMNS}
    labelled = [k for k, label in enumerate(labels) if label is not None]

    def note(text: str, units: Iterable[int]) -> dict[str, list[Any]]:
        for k in units:
            out["grounding_note"][k] = text
        return out

    if not labelled:
        return out
    if evidence.spatial_maps is None:
        return note(NO_MASKS, labelled)
    index = mask_index(evidence, params)
    if index.n_rows != evidence.n_images:
        return note(MISALIGNED, labelled)
    if not bool(index.annotated.any()):
        return note(NO_ANNOTATED, labelled)
    map_size = _map_size(evidence)
    if map_size == (1, 1):
        return note(NO_EXTENT, labelled)
    by_text = {c.text: c for c in concepts}
    classes = {k: tuple(mask_classes_for(by_text.get(labels[k]) or str(labels[k]), index.classes, params.mask_classes))
               for k in labelled}
    for k in labelled:
        if not classes[k]:
            out["grounding_note"][k] = f"no masks of '{labels[k]}' in the probe (map it under output.columns.grounding.mask_classes)"
    need = [k for k in labelled if classes[k]]
    if not need:
        return out
    dev = device or "cpu"
    T = _thresholds(evidence, params, index, dev)
    top = _top_rows(evidence, torch.from_numpy(index.annotated), params.top_images)
    wanted: dict[int, list[int]] = {}
    for k in need:
        for r in top[k].tolist():
            wanted.setdefault(r, []).append(k)
    game = PointingGame(index.grid, map_size, params.pointing_tolerance)
    groups = sorted(set(classes[k] for k in need))
    chance = _chances(evidence, index, game, groups, params)
    rows_of: dict[tuple[str, ...], set[int]] = {}  # per class set, the top rows of its neurons
    for r, units in wanted.items():
        for k in units:
            rows_of.setdefault(classes[k], set()).add(r)
    at = {g: {r: i for i, r in enumerate(sorted(rows))} for g, rows in rows_of.items()}  # row -> place in masks / near
    masks = {g: index.union(g, np.fromiter(where, np.int64, len(where))) for g, where in at.items()}  # [rows of g, G]
    near = {g: game.near(m.reshape(-1, *index.grid)) for g, m in masks.items()}
    sums = {name: np.zeros(K) for name in ("inter", "union", "hits", "seen", "e_inter", "e_union", "e_hits")}
    for r, maps in _maps_at(evidence, sorted(wanted)):
        units = wanted[r]
        planes = upsample(maps[units].to(dev, torch.float32), index.grid).reshape(len(units), -1).cpu()
        above = (planes > T[units].unsqueeze(1)).numpy()
        peaks = planes.argmax(1).numpy()
        for j, k in enumerate(units):
            g = classes[k]
            i = at[g][r]
            L, place, usual = masks[g][i], game.place(int(peaks[j])), chance[g]
            area, overlap = np.count_nonzero(above[j]), float(usual.P[above[j]].sum())
            sums["inter"][k] += np.count_nonzero(above[j] & L)
            sums["union"][k] += np.count_nonzero(above[j] | L)
            sums["hits"][k] += bool(near[g][i, place])
            sums["seen"][k] += 1
            sums["e_inter"][k] += overlap
            sums["e_union"][k] += area + usual.area - overlap
            sums["e_hits"][k] += usual.hit[place]
    for k in need:
        if sums["seen"][k] == 0:  # a dead neuron (labelled by a third-party method) has no top image
            out["grounding_note"][k] = "no top image"
            continue
        iou = float(sums["inter"][k] / sums["union"][k]) if sums["union"][k] > 0 else 0.0
        base = float(sums["e_inter"][k] / sums["e_union"][k]) if sums["e_union"][k] > 0 else 0.0
        out["grounding_iou"][k] = iou
        out["grounding_above_chance"][k] = (iou - base) / (1.0 - base) if base < 1.0 else 0.0
        out["pointing"][k] = float(sums["hits"][k] / sums["seen"][k])
        out["pointing_above_chance"][k] = float((sums["hits"][k] - sums["e_hits"][k]) / sums["seen"][k])
    return out


class GroundingColumns:
    """Grounding as a column group (:mod:`dissectkit.labelling.columns`)."""

    name = "grounding"
    columns = (
        Column("grounding_iou", "IoU of the neuron's maps (netdissect's quantile threshold) with its label's masks over its top annotated images", better="higher"),
        Column("grounding_above_chance", "grounding_iou corrected for chance: (IoU - E) / (1 - E), E the IoU the same maps "
               "would get against the label's masks placed as in a random annotated image", better="higher"),
        Column("pointing", "share of the neuron's top annotated images on which its map peaks inside its label's masks", better="higher"),
        Column("pointing_above_chance", "pointing minus the share expected where the label's masks are placed as in a random "
               "annotated image", better="higher"),
        Column("grounding_note", "why the grounding columns are empty for a labelled neuron", kind="str"),
    )
    params = GroundingParams

    def compute(self, ctx: LabelContext, params: Any) -> dict[str, list[Any]]:
        return layer_grounding(ctx.evidence, ctx.labels.top1(), ctx.concepts, params, ctx.device)


GROUNDING = GroundingColumns()
