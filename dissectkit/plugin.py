"""The public plugin API: everything a plugin imports from dissectkit, in one module.

``docs/plugins.md`` is its reference (every hook, kind, member and registration field). Names here
are stable; every other module of dissectkit is private and may change::

    from dissectkit.plugin import ConceptSet, Concept, Register, hookimpl

    class MyWords(ConceptSet):
        concepts = [Concept("mass", "finding")]

    @hookimpl
    def dissectkit_register_concept_sets(register: Register) -> None:
        register("my-words", lambda params, ctx: MyWords(), description="...")

Groups:

- hooks: ``hookimpl``, ``hookspec``, ``PROJECT``;
- registering: ``Register`` (what a registration hook receives), ``ComponentSpec``, ``MasksWhen``,
  ``Params``, ``NoParams``, ``KINDS``, ``BuildContext`` (the ``ctx`` of factories); parameter markers:
  ``PythonCallable`` (a field naming code: trust gate), ``probe_bound`` and ``params_of`` (parameters
  checked against the probe's size before any work), ``concept_categories`` (checked against the
  concept set);
- the seven kinds, one base class each (required members, optional members with defaults):
  ``Dissector``, ``Target``, ``Probe``, ``ConceptSet``, ``Similarity``, ``Method``, ``Reporter``;
  ``adapt`` (a duck-typed object as its kind's base class);
- data: ``Concept``, ``LayerInfo``, ``ProbeItem``, ``Evidence``, ``SpatialBatch``, ``LayerLabels``,
  ``NO_CONCEPT_REASONS``, ``concept_list``, ``ActivationStream``; what reporters and event hooks
  receive: ``RunResult``, ``LabelSet``, ``Recipe``; ``layer_threshold``; what a reporter may watch of
  the run's pass: ``PassPlan``, ``PassObserver``, ``Observation``;
- errors: ``DissectkitError`` and its subclasses, ``did_you_mean``;
- weights: ``WeightsRef``, ``as_weights_ref``, ``resolve_weights``, ``fetch_command``,
  ``file_fingerprint``, ``load_checkpoint``, ``extract_state_dict``, ``load_state_dict_strict``;
- images (the raw-image contract of ``docs/data.md``): ``read_image``, ``as_array``, ``to_unit_float``,
  ``minmax_unit``, ``to_uint8``, ``to_pil``, ``gray_or_rgb``, ``warn_if_flat``; Mammo-CLIP's PNG
  conversion: ``mammo_clip_png``, ``resize_area``;
- file probes: ``FileProbe``, ``FileProbeParams``, ``Record``, ``read_csv``, ``read_mask``,
  ``box_mask``, ``unique_ids``, ``IMAGE_SUFFIXES``;
- models: ``Capture`` (forward capture of named layers), ``first_tensor``, ``info_from_shape``,
  ``infer_layer_infos``;
- dissector helpers (imported on first use): ``TorchDissectorBase``, ``digest``, ``l2_normalize``,
  ``load_tokenizer``, ``hf_offline``, ``hub_fetch_hint``, ``bert_config_from_state_dict``,
  ``sub_state_dict``, ``batched_rows``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

from dissectkit.base.context import BuildContext
from dissectkit.base.contract import ConceptSet, Dissector, Method, Probe, Reporter, Similarity, Target, adapt
from dissectkit.base.errors import (
    ComponentError,
    DataError,
    DissectkitError,
    EvidenceError,
    LayerError,
    PluginComponentError,
    PluginError,
    RecipeError,
    WeightsError,
    did_you_mean,
)
from dissectkit.base.params import (
    NoParams,
    Params,
    PythonCallable,
    concept_categories,
    params_of,
    probe_bound,
)
from dissectkit.base.types import Concept, LayerInfo, MasksWhen, ProbeItem
from dissectkit.base.weights import (
    WeightsRef,
    extract_state_dict,
    fetch_command,
    file_fingerprint,
    load_checkpoint,
    load_state_dict_strict,
)
from dissectkit.base.weights import as_ref as as_weights_ref
from dissectkit.base.weights import resolve as resolve_weights
from dissectkit.host.hookspecs import PROJECT, hookimpl, hookspec
from dissectkit.host.recipe import Recipe
from dissectkit.host.registry import KINDS, ComponentSpec, Register, Registry
from dissectkit.imaging.checks import warn_if_flat
from dissectkit.imaging.files import (
    IMAGE_SUFFIXES,
    FileProbe,
    FileProbeParams,
    Record,
    box_mask,
    read_csv,
    read_mask,
    unique_ids,
)
from dissectkit.imaging.mammo_png import convert as mammo_clip_png
from dissectkit.imaging.mammo_png import resize_area
from dissectkit.imaging.raw import (
    as_array,
    gray_or_rgb,
    minmax_unit,
    read_image,
    to_pil,
    to_uint8,
    to_unit_float,
)
from dissectkit.labelling.evidence import (
    NO_CONCEPT_REASONS,
    Evidence,
    LayerLabels,
    SpatialBatch,
    concept_list,
)
from dissectkit.labelling.measures import layer_threshold
from dissectkit.labelling.streaming import ActivationStream
from dissectkit.nn.capture import Capture, first_tensor
from dissectkit.nn.layers import infer_layer_infos, info_from_shape
from dissectkit.results.observe import Observation, PassObserver, PassPlan
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

_DEPRECATED_ALIASES: dict[str, type] = {
    "DissectorDefaults": Dissector,
    "TargetDefaults": Target,
    "ProbeDefaults": Probe,
    "SimilarityDefaults": Similarity,
    "MethodDefaults": Method,
    "ReporterDefaults": Reporter,
}
"""The former optional-member classes: now the kinds' base classes (removed in the next release)."""

_DEPRECATED_READERS: dict[str, tuple[str, Callable[..., Any]]] = {
    "probe_ids": ("probe.ids()", lambda p: [str(i) for i in adapt("probe", p).ids()]),
    "probe_skipped": ("probe.skipped", lambda p: list(adapt("probe", p).skipped)),
    "target_ground_truth": ("target.ground_truth(layer)", lambda t, layer: adapt("target", t).ground_truth(layer)),
    "target_mask_aligner": ("target.preprocess_mask", lambda t: adapt("target", t).preprocess_mask),
    "similarity_scores": ("sim.from_embeddings(I, T, A)", lambda s, i, t, a: adapt("similarity", s).from_embeddings(i, t, a)),
    "method_needs_masks": ("method.needs_masks", lambda m: bool(adapt("method", m).needs_masks)),
    "method_uses_dissector": ("method.uses_dissector", lambda m: bool(adapt("method", m).uses_dissector)),
}
"""The former reader functions (one per optional member), for one release: read the member of the
adapted component instead."""

__all__ = [
    "IMAGE_SUFFIXES",
    "KINDS",
    "NO_CONCEPT_REASONS",
    "PROJECT",
    "ActivationStream",
    "BuildContext",
    "Capture",
    "ComponentError",
    "ComponentSpec",
    "Concept",
    "ConceptSet",
    "DataError",
    "Dissector",
    "DissectkitError",
    "Evidence",
    "EvidenceError",
    "FileProbe",
    "FileProbeParams",
    "LabelSet",
    "LayerError",
    "LayerInfo",
    "LayerLabels",
    "MasksWhen",
    "Method",
    "NoParams",
    "Observation",
    "Params",
    "PythonCallable",
    "params_of",
    "concept_categories",
    "probe_bound",
    "PassObserver",
    "PassPlan",
    "PluginComponentError",
    "PluginError",
    "Probe",
    "ProbeItem",
    "Recipe",
    "RecipeError",
    "Record",
    "Register",
    "Registry",
    "Reporter",
    "RunResult",
    "Similarity",
    "SpatialBatch",
    "Target",
    "WeightsError",
    "WeightsRef",
    "adapt",
    "as_array",
    "as_weights_ref",
    "box_mask",
    "concept_list",
    "did_you_mean",
    "extract_state_dict",
    "fetch_command",
    "file_fingerprint",
    "first_tensor",
    "gray_or_rgb",
    "hookimpl",
    "hookspec",
    "infer_layer_infos",
    "info_from_shape",
    "layer_threshold",
    "load_checkpoint",
    "load_state_dict_strict",
    "mammo_clip_png",
    "minmax_unit",
    "read_csv",
    "read_image",
    "read_mask",
    "resize_area",
    "resolve_weights",
    "to_pil",
    "to_uint8",
    "to_unit_float",
    "unique_ids",
    "warn_if_flat",
    *_DISSECTOR_HELPERS,
]


def __getattr__(name: str) -> Any:
    """The dissector helpers load on first use (they import torch); deprecated names warn."""
    if name in _DISSECTOR_HELPERS:
        return getattr(importlib.import_module("dissectkit.nn.dissector_base"), name)
    if name in _DEPRECATED_ALIASES:
        base = _DEPRECATED_ALIASES[name]
        warnings.warn(f"dissectkit.plugin.{name} is deprecated: subclass dissectkit.plugin.{base.__name__}, "
                      "the kind's base class, which declares the same optional members.", DeprecationWarning, stacklevel=2)
        return base
    if name in _DEPRECATED_READERS:
        member, reader = _DEPRECATED_READERS[name]
        warnings.warn(f"dissectkit.plugin.{name} is deprecated: read {member} of the component "
                      "(components built by the host are adapted to their kind's base class).", DeprecationWarning, stacklevel=2)
        return reader
    raise AttributeError(f"module 'dissectkit.plugin' has no attribute {name!r}")
