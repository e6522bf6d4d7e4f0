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
from collections.abc import Iterable, Mapping
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

__all__ = ["GROUNDING", "GroundingParams", "SpatialSurvey", "layer_grounding", "mask_classes_for", "survey"]

NO_MASKS = "no masks: the probe has no per-concept masks or boxes"
NO_ANNOTATED = "no probe image carries masks"
NO_EXTENT = "the layer has no spatial extent (1 x 1 maps)"
MISALIGNED = "the spatial maps and the activations cover different images"
_MEMO_SIZE = 8


class GroundingParams(Params):
    """Settings of the ``grounding`` column group (``output.columns.grounding``)."""

    quantile: float = Field(0.005, gt=0, lt=1, description="Network Dissection's quantile: fraction of grid pixels above each neuron's threshold")
    resolution: int | None = Field(112, ge=1, description="longer side of the comparison grid (netdissect's); null: the masks' own size")
    max_memory_mb: float = Field(512.0, gt=0, description="bound on the threshold computation's memory (netdissect's)")
    top_images: int = Field(10, ge=1, description="the neuron's most activating annotated images compared with the masks")
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
class SpatialSurvey:
    """One pass over a layer's spatial stream: its rows, the annotated ones (a non-empty mask dict,
    as Network Dissection counts them), the mask classes seen and the maps' size."""

    n_rows: int
    annotated: torch.Tensor
    classes: set[str]
    map_size: tuple[int, int]


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


def survey(evidence: Evidence) -> SpatialSurvey:
    """:class:`SpatialSurvey` of ``evidence.spatial_maps`` (memoised per spatial source)."""

    def run() -> SpatialSurvey:
        import torch

        assert evidence.spatial_maps is not None
        flags: list[bool] = []
        classes: set[str] = set()
        size = (1, 1)
        for batch in evidence.spatial_maps():
            size = tuple(batch.maps.shape[-2:])  # type: ignore[assignment]
            for masks in batch.masks:
                flags.append(bool(masks))
                classes.update(masks or ())
        return SpatialSurvey(len(flags), torch.tensor(flags, dtype=torch.bool), classes, size)

    key = _source_key(evidence)
    return _memo(None if key is None else ("survey", key), run)  # type: ignore[no-any-return]


def _thresholds(evidence: Evidence, params: GroundingParams, device: str):
    """Network Dissection's ``T [K]`` of the layer: memoised per spatial source and setting, and kept
    with the cached maps (:func:`~dissectkit.labelling.spatial_grid.derived`), so a layer's thresholds
    are computed once whatever the methods, dissectors and runs that read them."""
    grid = QuantileGrid(params, who="grounding")
    annotated = int(survey(evidence).annotated.sum())
    if params.threshold_images is not None and annotated > params.threshold_images:
        grid.stride = -(-annotated // params.threshold_images)
    parts = {"quantile": params.quantile, "resolution": params.resolution, "max_memory_mb": params.max_memory_mb,
             "stride": grid.stride}
    key = _source_key(evidence)

    def compute():
        return derived(evidence.spatial_maps, "thresholds", parts,
                       lambda: {"T": grid.layer_thresholds(evidence, device)[0]})["T"]

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


def _grid_union(masks: dict[str, np.ndarray], classes: list[str], size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """The union of ``classes``' masks of one image sampled to ``grid`` (nearest, as netdissect)."""
    import numpy as np

    from dissectkit.imaging.raw import centre_indices

    out = np.zeros(grid, dtype=bool)
    iy, ix = centre_indices(size[0], grid[0]), centre_indices(size[1], grid[1])
    for c in classes:
        if c in masks:
            out |= np.asarray(masks[c], dtype=bool)[np.ix_(iy, ix)]
    return out


def layer_grounding(evidence: Evidence, labels: list[str | None], concepts: Iterable[Concept],
                    params: GroundingParams | None = None, device: str | None = None) -> dict[str, list[Any]]:
    """The grounding columns of one layer: ``labels[k]`` is neuron k's top-1 concept (``None``: none)."""
    import numpy as np
    import torch

    params = params or GroundingParams()
    K = len(labels)
    out: dict[str, list[Any]] = {"grounding_iou": [None] * K, "pointing": [None] * K, "grounding_note": [None] * K}
    labelled = [k for k, label in enumerate(labels) if label is not None]

    def note(text: str, units: Iterable[int]) -> dict[str, list[Any]]:
        for k in units:
            out["grounding_note"][k] = text
        return out

    if not labelled:
        return out
    if evidence.spatial_maps is None:
        return note(NO_MASKS, labelled)
    info = survey(evidence)
    if info.n_rows != evidence.n_images:
        return note(MISALIGNED, labelled)
    if not bool(info.annotated.any()):
        return note(NO_ANNOTATED, labelled)
    if info.map_size == (1, 1):
        return note(NO_EXTENT, labelled)
    index = {c.text: c for c in concepts}
    classes = {k: mask_classes_for(index.get(labels[k]) or str(labels[k]), info.classes, params.mask_classes) for k in labelled}
    for k in labelled:
        if not classes[k]:
            out["grounding_note"][k] = f"no masks of '{labels[k]}' in the probe (map it under output.columns.grounding.mask_classes)"
    need = [k for k in labelled if classes[k]]
    if not need:
        return out
    dev = device or "cpu"
    T = _thresholds(evidence, params, dev)
    top = _top_rows(evidence, info.annotated, params.top_images)
    wanted: dict[int, list[int]] = {}
    for k in need:
        for r in top[k].tolist():
            wanted.setdefault(r, []).append(k)
    inter = np.zeros(K)
    union = np.zeros(K)
    hits = np.zeros(K)
    seen = np.zeros(K)
    grid = QuantileGrid(params, who="grounding")
    row = 0
    for batch in evidence.spatial_maps():
        maps = torch.as_tensor(batch.maps)
        for b, masks in enumerate(batch.masks):
            units = wanted.get(row + b)
            if not units or not masks:
                continue
            H, W = next(iter(masks.values())).shape
            gh, gw = grid.grid(H, W)
            planes = upsample(maps[b, units].to(dev, torch.float32), (gh, gw)).reshape(len(units), -1).cpu()
            above = (planes > T[units].unsqueeze(1)).numpy()
            peaks = planes.argmax(1).numpy()
            for j, k in enumerate(units):
                L = _grid_union(masks, classes[k], (H, W), (gh, gw)).reshape(-1)
                inter[k] += np.count_nonzero(above[j] & L)
                union[k] += np.count_nonzero(above[j] | L)
                hits[k] += bool(L[peaks[j]])
                seen[k] += 1
        row += maps.shape[0]
    for k in need:
        if seen[k] == 0:  # a dead neuron (labelled by a third-party method) has no top image
            out["grounding_note"][k] = "no top image"
            continue
        out["grounding_iou"][k] = float(inter[k] / union[k]) if union[k] > 0 else 0.0
        out["pointing"][k] = float(hits[k] / seen[k])
    return out


class GroundingColumns:
    """Grounding as a column group (:mod:`dissectkit.labelling.columns`)."""

    name = "grounding"
    columns = (
        Column("grounding_iou", "IoU of the neuron's maps (netdissect's quantile threshold) with its label's masks over its top annotated images", better="higher"),
        Column("pointing", "share of the neuron's top annotated images on which its map peaks inside its label's masks", better="higher"),
        Column("grounding_note", "why the grounding columns are empty for a labelled neuron", kind="str"),
    )
    params = GroundingParams

    def compute(self, ctx: LabelContext, params: Any) -> dict[str, list[Any]]:
        return layer_grounding(ctx.evidence, ctx.labels.top1(), ctx.concepts, params, ctx.device)


GROUNDING = GroundingColumns()
