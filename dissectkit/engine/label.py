"""Labelling: every method on every (dissector, target, layer) from the cached evidence.

The unit of work is one (target, layer): its activations (and spatial maps) are read from the
cache once and shared by every dissector and method. A method that uses no dissector (Network
Dissection) runs once per unit and its labels are copied to every dissector. In a distributed run
unit ``i`` is labelled on rank ``i % world`` and the results are gathered to every rank.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from dissectkit.base.errors import DataError
from dissectkit.engine.cache import Cache
from dissectkit.engine.distributed import World
from dissectkit.engine.extract import Extraction
from dissectkit.engine.resolve import Resolved, TargetSlot
from dissectkit.engine.spatial import SpatialSource
from dissectkit.labelling.column_groups import compute_columns
from dissectkit.labelling.columns import LabelContext
from dissectkit.labelling.evidence import Evidence, LayerLabels
from dissectkit.results.run_result import LabelSet

TEXT_BATCH = 256


class TextEncoder:
    """``encode_texts`` for methods: memoised in memory and in the cache, batched, CPU float32."""

    def __init__(self, dissector: Any, cache: Cache) -> None:
        self.dissector = dissector
        self.cache = cache
        self.fp = dissector.fingerprint()
        self._memo: dict[tuple[str, ...], Any] = {}

    def __call__(self, texts: list[str]):
        import torch

        key = tuple(texts)
        if key in self._memo:
            return self._memo[key]
        values = self.cache.load_texts(self.fp, list(texts))
        if values is None:
            with torch.inference_mode():
                parts = [self.dissector.encode_texts(list(texts[i : i + TEXT_BATCH])).detach().float().cpu() for i in range(0, len(texts), TEXT_BATCH)]
            values = torch.cat(parts) if parts else torch.zeros(0, int(self.dissector.embed_dim))
            self.cache.save_texts(self.fp, list(texts), values)
        self._memo[key] = values
        return values


@dataclass
class LayerResult:
    """The labels (and measures against the truth) of one (target, layer) for every
    (dissector, method) pair."""

    target: str
    layer: str
    labels: dict[tuple[str, str], LayerLabels] = field(default_factory=dict)
    measures: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    columns: dict[tuple[str, str], dict[str, list[Any]]] = field(default_factory=dict)


def label_layer(res: Resolved, ex: Extraction, slot: TargetSlot, layer: str, encoders: dict[str, TextEncoder],
                embeddings: dict[str, tuple[Any, Any]]) -> LayerResult:
    """Label one layer with every (dissector, method) pair."""
    entry = ex.acts[(slot.label, layer)]
    valid_a = entry.read_valid()
    truth = slot.instance.ground_truth(layer)
    out = LayerResult(slot.label, layer)

    def evidence(d_label: str, valid: Any) -> Evidence:
        if not valid.any():
            raise DataError("No probe image could be read; nothing to label. See the skipped images in the manifest.")
        spatial = None
        if (slot.label, layer) in ex.spatial:
            spatial = SpatialSource(ex.spatial[(slot.label, layer)], ex.masks[slot.label], valid, res.recipe.runtime.batch_size)
        return Evidence(
            layer=layer,
            activations=None,
            activation_chunks=lambda: entry.iter_rows(valid),
            image_embeddings=embeddings[d_label][0][valid],
            concepts=res.concepts,
            encode_texts=encoders[d_label],
            spatial_maps=spatial,
            seed=res.ctx.seed,
            device=res.ctx.device,
            image_index=valid.nonzero().flatten(),
        )

    def record(d_label: str, m_label: str, labels: LayerLabels) -> None:
        labels.layer = layer
        out.labels[(d_label, m_label)] = labels
        seen = evidence(d_label, valid_a & embeddings[d_label][1])  # each dissector's own rows and embeddings
        ctx = LabelContext(layer, labels, seen, res.concepts, res.methods[m_label], truth, res.ctx.device)
        out.columns[(d_label, m_label)] = compute_columns(ctx, res.columns)
        if truth is not None:
            out.measures[(d_label, m_label)] = _final_layer_measures(labels, truth, res.concepts)

    shared_valid = valid_a.clone()
    for _emb, valid_e in embeddings.values():
        shared_valid &= valid_e
    first = next(iter(res.dissectors))
    for m_label, method in res.methods.items():
        if method.uses_dissector:
            for d_label in res.dissectors:
                record(d_label, m_label, method.label(evidence(d_label, valid_a & embeddings[d_label][1])))
        else:  # one labelling, the same for every dissector
            labels = method.label(evidence(first, shared_valid))
            for d_label in res.dissectors:
                record(d_label, m_label, labels if d_label == first else copy.deepcopy(labels))
    return out


def label_all(res: Resolved, ex: Extraction, cache: Cache, progress: Any = None,
              world: World | None = None) -> tuple[list[LabelSet], dict[str, Any]]:
    """Label every (target, layer) (this rank's share when distributed, then gathered) and return
    the label sets in (dissector, target, method) order with the measures against the truth."""
    from dissectkit.host.manager import get_host

    world = world or World()
    units = [(slot, info.name) for slot in res.targets.values() for info in slot.layers]
    embeddings = {d: ex.embeds[d].read_all() for d in res.dissectors}
    encoders = {d: TextEncoder(dissector, cache) for d, dissector in res.dissectors.items()}
    mine = [u for i, u in enumerate(units) if world.owns(i)]
    task = progress.add_task("label", total=len(mine)) if progress else None
    done: list[LayerResult] = []
    for slot, layer in mine:
        done.append(label_layer(res, ex, slot, layer, encoders, embeddings))
        if progress:
            progress.advance(task)
    results = {(r.target, r.layer): r for part in world.all_gather(done) for r in part}

    hook = get_host().pm.hook
    sets = {(d, t, m): LabelSet(d, t, m) for d in res.dissectors for t in res.targets for m in res.methods}
    measures: dict[str, Any] = {}
    for slot, layer in units:  # assembled in the one-process order, whoever labelled them
        r = results[(slot.label, layer)]
        for d_label in res.dissectors:
            for m_label in res.methods:
                labels = r.labels[(d_label, m_label)]
                label_set = sets[(d_label, slot.label, m_label)]
                label_set.layers[layer] = labels
                label_set.columns[layer] = r.columns[(d_label, m_label)]
                if world.is_main:
                    hook.dissectkit_layer_labelled(layer_labels=labels, dissector=d_label, target=slot.label, method=m_label)
                if (d_label, m_label) in r.measures:
                    measures.setdefault(label_set.key, {})[layer] = r.measures[(d_label, m_label)]
    ordered = {ls.key: measures[ls.key] for ls in sets.values() if ls.key in measures}
    return list(sets.values()), ordered


def _final_layer_measures(labels: LayerLabels, truth: list[str | None], concepts: Any = ()) -> dict[str, Any]:
    from dissectkit.labelling.groups import group_accuracy
    from dissectkit.labelling.measures import final_layer_accuracy

    return {**final_layer_accuracy(labels, truth), **(group_accuracy(labels, truth, concepts) or {})}
