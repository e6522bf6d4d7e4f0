"""Resolve: build every component of a recipe (collecting all errors) before any image is read."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dissectkit.base.context import BuildContext, resolve_device
from dissectkit.base.errors import (
    DataError,
    DissectkitError,
    EvidenceError,
    PluginComponentError,
    RecipeError,
)
from dissectkit.base.types import Concept, LayerInfo
from dissectkit.engine.preflight import missing_weights
from dissectkit.host.recipe import (
    Recipe,
    category_problems,
    component_refs,
    probe_size_problems,
    recipe_path,
    validate_components,
)
from dissectkit.labelling.column_groups import settings as column_settings
from dissectkit.labelling.evidence import concept_list
from dissectkit.labelling.groups import apply_groups, read_groups
from dissectkit.nn.layers import select_layers

log = logging.getLogger(__name__)


@dataclass
class TargetSlot:
    label: str
    name: str
    instance: Any
    layers: list[LayerInfo]
    pool: str
    token_pool: str


@dataclass
class Resolved:
    """Every component of a recipe, built and checked, before any image is read."""

    recipe: Recipe
    ctx: BuildContext
    dissectors: dict[str, Any]
    targets: dict[str, TargetSlot]
    probe: Any
    concepts: list[Concept]
    methods: dict[str, Any]
    reporters: dict[str, Any]
    probe_has_masks: bool = False
    """The probe's registration declares masks for these params."""
    licences: dict[str, str] = field(default_factory=dict)
    columns: dict[str, Any] = field(default_factory=dict)
    """Each per-neuron column group's params (``None``: turned off), from ``output.columns``."""
    """``"<kind> <label>"`` -> the licence its registration declares (components that declare one)."""

    @property
    def needs_spatial(self) -> bool:
        """Whether the pass must also cache spatial maps and aligned masks: the probe has masks and a
        mask method is asked for or the ``grounding`` columns are on (``resolve`` already refused a
        mask method without masks)."""
        grounding = self.columns.get("grounding", True) is not None
        return self.probe_has_masks and (grounding or any(m.needs_masks for m in self.methods.values()))


def build_context(recipe: Recipe, local_rank: int | None = None, **overrides: Any) -> BuildContext:
    """The factories' context from the recipe's runtime; ``local_rank`` picks this process's GPU
    in a distributed run (``cuda`` -> ``cuda:<local_rank>``)."""
    rt = recipe.runtime
    device = resolve_device(rt.device)
    if local_rank is not None and device == "cuda":
        import torch

        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)  # for code that asks for "the" GPU
    ctx = BuildContext(device=device, seed=rt.seed, strict_data=rt.strict_data)
    ctx.offline = rt.offline or ctx.offline
    if rt.cache_dir:
        ctx.cache_dir = Path(rt.cache_dir).expanduser()
    for k, v in overrides.items():
        setattr(ctx, k, v)
    if ctx.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return ctx


def resolve(recipe: Recipe, ctx: BuildContext | None = None, kinds: tuple[str, ...] | None = None) -> Resolved:
    """Validate params, build the components (all of them, collecting every error) and check layers."""
    from dissectkit.host.manager import get_host

    ctx = ctx or build_context(recipe)
    registry = get_host().registry
    validated = validate_components(recipe, registry)
    built: dict[int, Any] = {}
    licences: dict[str, str] = {}
    problems: list[str] = []
    failure: PluginComponentError | None = None
    for kind, path, ref in component_refs(recipe):
        if kinds is not None and kind not in kinds:
            continue
        spec = registry.get(kind, ref.name)
        where = recipe.position(*recipe_path(recipe, path))
        if spec.licence:
            licences[f"{kind} {ref.display}"] = spec.licence
        try:
            built[id(ref)] = spec.build(validated[id(ref)], ctx)
        except DissectkitError as exc:
            problems.append(f"  - {kind} '{ref.display}' ({where}): {exc}")
            failure = failure or (exc if isinstance(exc, PluginComponentError) else None)
            continue
        # components may load weights lazily: name every missing file now, before any work
        problems += [f"  - {kind} '{ref.display}' ({where}): {msg}" for msg in missing_weights(validated[id(ref)], ctx)]
    if problems:
        error = RecipeError("Cannot start the run; nothing was computed:\n" + "\n".join(problems))
        if failure is not None:  # a plugin's factory raised: its fault, exit 1 (docs/plugins.md)
            error.exit_code = failure.exit_code
            raise error from failure
        raise error

    targets: dict[str, TargetSlot] = {}
    for ref in recipe.targets:
        if id(ref) not in built:
            continue
        target = built[id(ref)]
        layers = select_layers(ref.layers, target.layers(), target=f"target '{ref.display}'")
        targets[ref.display] = TargetSlot(ref.display, ref.name, target, layers, ref.pool, ref.token_pool)
    probe = built.get(id(recipe.probe))
    if probe is not None and len(probe) == 0:
        fields = [f"`{f}`" for f in ("root", "split") if f in type(validated[id(recipe.probe)]).model_fields]
        check = f" Check its {' and '.join(fields)}." if fields else ""
        raise DataError(f"Probe '{recipe.probe.name}' has no images ({recipe.position('probe')}).{check}")
    if probe is not None:
        bounded = probe_size_problems(recipe, validated, len(probe), registry)
        if bounded:
            raise RecipeError("Cannot start the run; nothing was computed. The recipe asks more of the probe than it "
                              "has:\n" + "\n".join(bounded))
    concepts: list[Concept] = []
    if id(recipe.concepts) in built:
        concepts = concept_list(built[id(recipe.concepts)])
        if not concepts:
            raise DataError(f"Concept set '{recipe.concepts.name}' is empty ({recipe.position('concepts')}).")
        named = category_problems(recipe, validated, concepts)
        if named:
            raise RecipeError("Cannot start the run; nothing was computed. The recipe names categories its concept "
                              "set lacks:\n" + "\n".join(named))
        if recipe.concepts.groups:
            concepts = apply_groups(concepts, read_groups(recipe.concepts.groups), recipe.concepts.groups)
    has_masks = registry.get("probe", recipe.probe.name).probe_has_masks(validated[id(recipe.probe)])
    if probe is not None and getattr(probe, "has_masks", None) is True and not has_masks:
        log.warning("Probe '%s' sets has_masks = True on the object, which is ignored: declare it at registration "
                    "(register(..., has_masks=True)) or on the probe class (docs/plugins.md).", recipe.probe.name)
    methods = {r.display: built[id(r)] for r in recipe.methods if id(r) in built}
    for label, method in methods.items():
        check_masks_available(label, method, recipe.probe.name, has_masks if probe is not None else None)
    return Resolved(
        recipe=recipe,
        ctx=ctx,
        dissectors={r.display: built[id(r)] for r in recipe.dissectors if id(r) in built},
        targets=targets,
        probe=probe,
        concepts=concepts,
        methods=methods,
        reporters={r.display: built[id(r)] for r in recipe.output.reporters if id(r) in built},
        probe_has_masks=has_masks,
        licences=licences,
        columns=column_settings(recipe.output.columns),
    )


def probe_ids(probe: Any, name: str = "probe") -> list[str]:
    """The probe ids rule: one call of the probe's ``ids()`` (the indices by default), one unique
    string per image."""
    values = [str(v) for v in probe.ids()]
    if len(values) != len(probe):
        raise DataError(f"Probe '{name}' returned {len(values)} ids for {len(probe)} images; ids() must give one per image.")
    if len(set(values)) != len(values):
        twice = sorted(v for v, n in Counter(values).items() if n > 1)
        raise DataError(f"Probe '{name}' gives the same id to several images ({', '.join(twice[:3])}); ids must be unique.")
    return values


def check_masks_available(method_label: str, method: Any, probe_label: str, has_masks: bool | None) -> None:
    """A method that needs masks with a probe that has none: an ``EvidenceError`` before any work
    (``has_masks=None``: the probe is unknown yet, nothing to check)."""
    from dissectkit.host.manager import get_host

    if has_masks is None or has_masks or not method.needs_masks:
        return
    masked = get_host().registry.masked_probes()
    raise EvidenceError(
        f"Method '{method_label}' needs a probe with per-concept masks, but probe '{probe_label}' has none "
        f"with these params. Use a probe with masks ({', '.join(masked) or 'none installed'}) or another method."
    )
