"""The hook specifications: how a plugin adds components to dissectkit and follows a run.

Each registration hook receives the :class:`~dissectkit.host.registry.Registry` and calls
``registry.add(kind, name, factory, params=Model, description=..., **metadata)`` once per
component. None of them is ``firstresult``: every plugin is asked. The built-ins register first
and keep their names; a plugin registering a taken name fails as a whole (see ``docs/plugins.md``).

The event hooks (``run_started``, ``stage_finished``, ``layer_labelled``, ``run_finished``) are
for loggers and trackers; their return values are ignored and they must not change their arguments.
Plugins import the markers from :mod:`dissectkit.plugin`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from dissectkit.host.recipe import Recipe
    from dissectkit.host.registry import Registry
    from dissectkit.labelling.evidence import LayerLabels
    from dissectkit.results.run_result import RunResult

PROJECT = "dissectkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dissectkit_register_dissectors(registry: Registry) -> None:
    """Register dissectors (kind ``dissector``): vision-language models with ``embed_dim``,
    ``preprocess(image) -> Tensor[3, H, W]``, ``encode_images(x) -> [B, D]`` and
    ``encode_texts(texts) -> [n, D]`` (both L2-normalised) and ``fingerprint()``; optional
    ``to(device)`` and ``input_size`` (:class:`dissectkit.plugin.DissectorDefaults`)."""


@hookspec
def dissectkit_register_targets(registry: Registry) -> None:
    """Register targets (kind ``target``): models whose neurons are labelled, exposing ``module``
    (eval mode), ``preprocess(image)``, ``layers() -> list[LayerInfo]`` (without running images) and
    ``fingerprint()``; optional ``ground_truth(layer)`` and ``preprocess_mask(mask)``."""


@hookspec
def dissectkit_register_probes(registry: Registry) -> None:
    """Register probe datasets (kind ``probe``): ``__len__``, ``__getitem__(i) -> ProbeItem`` and
    ``fingerprint()`` (changes with the files and their order); optional ``ids()``,
    ``has_masks`` and ``skipped``. Register with ``has_masks=True`` metadata when items carry masks."""


@hookspec
def dissectkit_register_concept_sets(registry: Registry) -> None:
    """Register concept sets (kind ``concepts``): objects with ``concepts -> list[Concept]``."""


@hookspec
def dissectkit_register_similarities(registry: Registry) -> None:
    """Register similarity functions (kind ``similarity``): callables
    ``(P[N, C], A[N, K]) -> Tensor[K, C]``, higher = better; optional ``from_embeddings(I, T, A)``."""


@hookspec
def dissectkit_register_methods(registry: Registry) -> None:
    """Register labelling methods (kind ``method``): objects with ``name`` and
    ``label(evidence) -> LayerLabels``; optional ``needs_masks`` and ``uses_dissector``."""


@hookspec
def dissectkit_register_reporters(registry: Registry) -> None:
    """Register reporters (kind ``reporter``): objects with ``write(run_result, out_dir)``; see
    ``docs/plugins.md`` for the ``RunResult`` they receive."""


@hookspec
def dissectkit_run_started(recipe: Recipe, out_dir: Path) -> None:
    """Event: a run is about to start: its components are built and checked. ``out_dir`` is the
    run directory the results will appear in, whole, when the run finishes."""


@hookspec
def dissectkit_stage_finished(stage: str, seconds: float, out_dir: Path) -> None:
    """Event: a stage of the run finished (``resolve``, ``extract_embed``, ``label``, ``report``,
    in that order) after ``seconds``; ``out_dir`` as in ``run_started``."""


@hookspec
def dissectkit_layer_labelled(layer_labels: LayerLabels, dissector: str, target: str, method: str) -> None:
    """Event: one layer has been labelled by one method (``dissector``, ``target`` and ``method``
    are the recipe's labels of those components)."""


@hookspec
def dissectkit_run_finished(run_result: RunResult) -> None:
    """Event: a run finished, its reporters have written and its directory is in place."""
