"""The hook specifications: how a plugin adds components to dissectkit.

Each registration hook receives the :class:`~dissectkit.registry.Registry` and calls
``registry.add(...)`` once per component. None of them is ``firstresult``: every plugin is asked.
"""

from __future__ import annotations

import pluggy

PROJECT = "dissectkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dissectkit_register_dissectors(registry):
    """Register dissectors: vision-language models with ``embed_dim``, ``preprocess(image)``,
    ``encode_images(x) -> [B, D]`` and ``encode_texts(texts) -> [n, D]`` (both L2-normalised)
    and ``fingerprint()``."""


@hookspec
def dissectkit_register_targets(registry):
    """Register targets: models whose neurons are labelled, exposing ``module`` (eval mode),
    ``preprocess(image)``, ``layers() -> list[LayerInfo]`` (without running images) and
    ``fingerprint()``."""


@hookspec
def dissectkit_register_probes(registry):
    """Register probe datasets: ``__len__``, ``__getitem__(i) -> ProbeItem`` and
    ``fingerprint()`` (changes with the files and their order)."""


@hookspec
def dissectkit_register_concept_sets(registry):
    """Register concept sets: objects with ``concepts -> list[Concept]``."""


@hookspec
def dissectkit_register_similarities(registry):
    """Register similarity functions: callables ``(P[N, C], A[N, K]) -> Tensor[K, C]``,
    higher = better."""


@hookspec
def dissectkit_register_methods(registry):
    """Register labelling methods: objects with ``name``, ``needs_masks`` and
    ``label(evidence) -> LayerLabels``."""


@hookspec
def dissectkit_register_reporters(registry):
    """Register reporters: objects with ``write(run_result, out_dir)``."""


@hookspec
def dissectkit_run_started(recipe, out_dir):
    """Event: a run is about to start (for loggers and trackers). Return value ignored."""


@hookspec
def dissectkit_layer_labelled(layer_labels, dissector, target, method):
    """Event: one layer has been labelled by one method. Return value ignored."""


@hookspec
def dissectkit_run_finished(run_result):
    """Event: a run finished and its reporters have written. Return value ignored."""
