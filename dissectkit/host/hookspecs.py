"""The hook specifications: how a plugin adds components to dissectkit and follows a run.

``docs/plugins.md`` is the reference (arguments, when each hook is called, the contract of each
kind). Registration hooks receive ``register``, bound to the hook's kind (``register(name, factory,
params=Model, description=..., ...)``); hooks written for the former ``registry`` argument
(``registry.add(kind, ...)``) still work for one release, with a DeprecationWarning. Event hooks
return nothing and must not change their arguments. Plugins import the markers from
:mod:`dissectkit.plugin`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from dissectkit.host.recipe import Recipe
    from dissectkit.host.registry import Register, Registry
    from dissectkit.labelling.evidence import LayerLabels
    from dissectkit.results.run_result import RunResult

PROJECT = "dissectkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dissectkit_register_dissectors(register: Register, registry: Registry) -> None:
    """Register dissectors: vision-language models (``dissectkit.plugin.Dissector``)."""


@hookspec
def dissectkit_register_targets(register: Register, registry: Registry) -> None:
    """Register targets: the models whose neurons are labelled (``dissectkit.plugin.Target``)."""


@hookspec
def dissectkit_register_probes(register: Register, registry: Registry) -> None:
    """Register probe datasets (``dissectkit.plugin.Probe``); declare ``has_masks=`` here."""


@hookspec
def dissectkit_register_concept_sets(register: Register, registry: Registry) -> None:
    """Register concept sets: the candidate labels (``dissectkit.plugin.ConceptSet``)."""


@hookspec
def dissectkit_register_similarities(register: Register, registry: Registry) -> None:
    """Register similarity functions of ``P`` and the activations (``dissectkit.plugin.Similarity``)."""


@hookspec
def dissectkit_register_methods(register: Register, registry: Registry) -> None:
    """Register labelling methods (``dissectkit.plugin.Method``)."""


@hookspec
def dissectkit_register_reporters(register: Register, registry: Registry) -> None:
    """Register reporters, which write files about a run (``dissectkit.plugin.Reporter``)."""


@hookspec
def dissectkit_run_started(recipe: Recipe, out_dir: Path) -> None:
    """Event: a run's components are built and checked; its results will appear, whole, in ``out_dir``."""


@hookspec
def dissectkit_stage_finished(stage: str, seconds: float, out_dir: Path) -> None:
    """Event: a stage finished (``resolve``, ``extract_embed``, ``label``, ``report``, in order) after ``seconds``."""


@hookspec
def dissectkit_layer_labelled(layer_labels: LayerLabels, dissector: str, target: str, method: str) -> None:
    """Event: one method labelled one layer of one target through one dissector (the recipe's labels)."""


@hookspec
def dissectkit_run_finished(run_result: RunResult) -> None:
    """Event: a run finished, its reporters have written and its directory is in place."""
