"""The public plugin API: everything a plugin imports from dissectkit, in one module.

``docs/plugins.md`` documents it (hooks, a complete example per component kind, the ``ctx``
fields, the reporter's view of a run). Names here are stable; modules elsewhere are private::

    from dissectkit.plugin import hookimpl, Params, Registry, Concept

    @hookimpl
    def dissectkit_register_concept_sets(registry: Registry) -> None:
        registry.add("concepts", "my-words", lambda params, ctx: MyWords(), description="...")

Groups:

- hooks: ``hookimpl`` (mark an implementation), ``hookspec``, ``PROJECT``;
- registry: ``Registry``, ``ComponentSpec``, ``Params``, ``NoParams``, ``KINDS``, ``BuildContext``;
- protocols (required members): ``Dissector``, ``Target``, ``Probe``, ``ConceptSet``, ``Similarity``,
  ``Method``, ``Reporter``; optional members with their defaults: ``DissectorDefaults``,
  ``TargetDefaults``, ``ProbeDefaults``, ``SimilarityDefaults``, ``MethodDefaults``,
  ``ReporterDefaults``; the readers (one per rule): ``probe_ids``, ``probe_has_masks``,
  ``probe_skipped``, ``target_ground_truth``, ``target_mask_aligner``, ``similarity_scores``,
  ``method_needs_masks``, ``method_uses_dissector``, ``reporter_card_request``,
  ``dissector_input_size``, ``move_to``; ``CardRequest`` (what a reporter shows per neuron);
- data: ``Concept``, ``LayerInfo``, ``ProbeItem``, ``Evidence``, ``SpatialBatch``, ``LayerLabels``,
  ``concept_list``; what a reporter receives: ``RunResult``, ``LabelSet`` (and ``LayerLabels``);
  ``layer_threshold(layer_labels)`` (a layer's similarity threshold: mean top-1 score of its labels);
- errors: ``DissectkitError`` and its subclasses, ``did_you_mean``;
- weights: ``WeightsRef``, ``resolve_weights``, ``fetch_command``, ``file_fingerprint``,
  ``load_checkpoint``, ``extract_state_dict``, ``load_state_dict_strict``;
- dissector helpers (imported on first use): ``TorchDissectorBase``, ``digest``, ``l2_normalize``,
  ``load_tokenizer``, ``hf_offline``, ``hub_fetch_hint``, ``bert_config_from_state_dict``,
  ``sub_state_dict``, ``batched_rows``.

``RunResult``'s live accessors (``activations``, ``image_embeddings``, ``spatial_maps``) are being
reworked into data; its other fields are stable (see ``docs/plugins.md``).
"""

from __future__ import annotations

import importlib
from typing import Any

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import (
    ComponentError,
    DataError,
    DissectkitError,
    EvidenceError,
    LayerError,
    PluginError,
    RecipeError,
    WeightsError,
    did_you_mean,
)
from dissectkit.base.params import NoParams, Params
from dissectkit.base.types import Concept, LayerInfo, ProbeItem
from dissectkit.base.weights import (
    WeightsRef,
    extract_state_dict,
    fetch_command,
    file_fingerprint,
    load_checkpoint,
    load_state_dict_strict,
)
from dissectkit.base.weights import resolve as resolve_weights
from dissectkit.host.contract import (
    ConceptSet,
    Dissector,
    DissectorDefaults,
    Method,
    MethodDefaults,
    Probe,
    ProbeDefaults,
    Reporter,
    ReporterDefaults,
    Similarity,
    SimilarityDefaults,
    Target,
    TargetDefaults,
    dissector_input_size,
    method_needs_masks,
    method_uses_dissector,
    move_to,
    probe_has_masks,
    probe_ids,
    probe_skipped,
    reporter_card_request,
    similarity_scores,
    target_ground_truth,
    target_mask_aligner,
)
from dissectkit.host.hookspecs import PROJECT, hookimpl, hookspec
from dissectkit.host.registry import KINDS, ComponentSpec, Registry
from dissectkit.labelling.evidence import Evidence, LayerLabels, SpatialBatch, concept_list
from dissectkit.labelling.measures import layer_threshold
from dissectkit.report.cards import CardRequest
from dissectkit.results.run_result import LabelSet, RunResult

_DISSECTOR_HELPERS = (
    "TorchDissectorBase",
    "batched_rows",
    "bert_config_from_state_dict",
    "digest",
    "hf_offline",
    "hub_fetch_hint",
    "l2_normalize",
    "load_tokenizer",
    "sub_state_dict",
)

__all__ = [
    "KINDS",
    "PROJECT",
    "BuildContext",
    "CardRequest",
    "ComponentError",
    "ComponentSpec",
    "Concept",
    "ConceptSet",
    "DataError",
    "Dissector",
    "DissectorDefaults",
    "DissectkitError",
    "Evidence",
    "EvidenceError",
    "LabelSet",
    "LayerError",
    "LayerInfo",
    "LayerLabels",
    "Method",
    "MethodDefaults",
    "NoParams",
    "Params",
    "PluginError",
    "Probe",
    "ProbeDefaults",
    "ProbeItem",
    "RecipeError",
    "Registry",
    "Reporter",
    "ReporterDefaults",
    "RunResult",
    "Similarity",
    "SimilarityDefaults",
    "SpatialBatch",
    "Target",
    "TargetDefaults",
    "WeightsError",
    "WeightsRef",
    "concept_list",
    "did_you_mean",
    "dissector_input_size",
    "extract_state_dict",
    "fetch_command",
    "file_fingerprint",
    "hookimpl",
    "hookspec",
    "layer_threshold",
    "load_checkpoint",
    "load_state_dict_strict",
    "method_needs_masks",
    "method_uses_dissector",
    "move_to",
    "probe_has_masks",
    "probe_ids",
    "probe_skipped",
    "reporter_card_request",
    "resolve_weights",
    "similarity_scores",
    "target_ground_truth",
    "target_mask_aligner",
    *_DISSECTOR_HELPERS,
]


def __getattr__(name: str) -> Any:
    """The dissector helpers load on first use (their module is shared with the built-ins)."""
    if name in _DISSECTOR_HELPERS:
        return getattr(importlib.import_module("dissectkit.builtin.dissectors.common"), name)
    raise AttributeError(f"module 'dissectkit.plugin' has no attribute {name!r}")
