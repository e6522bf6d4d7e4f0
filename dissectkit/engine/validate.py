"""``dissectkit validate`` / ``layers`` / ``schema``: everything checkable without running models."""

from __future__ import annotations

from typing import Any

from dissectkit.base.errors import DataError, RecipeError, WeightsError
from dissectkit.base.types import LayerInfo
from dissectkit.base.weights import PathRef, describe, fetch_command, resolve
from dissectkit.engine.preflight import weights_refs
from dissectkit.engine.resolve import build_context, check_masks_available
from dissectkit.host.recipe import (
    Recipe,
    TargetRef,
    category_problems,
    check_trusted,
    code_fields,
    component_refs,
    probe_size_problems,
    recipe_path,
    validate_components,
)
from dissectkit.host.registry import KINDS
from dissectkit.labelling.column_groups import settings as column_settings
from dissectkit.labelling.evidence import concept_list


def validation_context(recipe: Recipe) -> Any:
    """The build context of ``validate`` / ``layers``: nothing runs on a device, so ``device: auto``
    is not resolved (that would import torch) and stays ``cpu``."""
    if recipe.runtime.device != "auto":
        return build_context(recipe)
    runtime = recipe.runtime.model_copy(update={"device": "cpu"})
    return build_context(recipe.model_copy(update={"runtime": runtime}))


def target_layer_infos(ref: TargetRef, recipe: Recipe, ctx: Any = None) -> list[LayerInfo]:
    """A target's layers: from its spec's ``layers`` field (architecture only, no weights) when
    it offers one, else by building the target."""
    from dissectkit.host.manager import get_host

    spec = get_host().registry.get("target", ref.name)
    params = spec.validate(ref.params, where="target")
    if not recipe.runtime.trust_code:
        check_trusted(recipe, {id(ref): params})  # nothing the recipe names runs untrusted
    ctx = ctx or validation_context(recipe)
    if spec.layers is not None:
        return list(spec.layers(params, ctx))
    return list(spec.build(params, ctx).layers())


def missing_weights(spec: Any, params: Any, ctx: Any) -> list[str]:
    """A line for each weights file of a component that is not on this machine: every weights ref
    in its params, plus what its spec's optional ``missing_weights(params, ctx)`` field reports
    (pretrained tags and the like). Nothing is downloaded or read: a path must exist, a hub or URL
    file must be in its local cache."""
    from dataclasses import replace

    local_only = replace(ctx, offline=True)
    lines = []
    for field, ref in weights_refs(params):
        try:
            resolve(ref, local_only, what=field)
        except WeightsError as exc:
            if ctx.offline or isinstance(ref, PathRef):
                lines.append(str(exc))
            else:
                lines.append(f"{field} {describe(ref)} is not local yet; `dissectkit run` downloads it "
                             f"(or fetch it now with: {fetch_command(ref)}).")
    return lines + (list(spec.missing_weights(params, ctx)) if spec.missing_weights is not None else [])


def validate_recipe(recipe: Recipe) -> list[str]:
    """Pass 2 plus layer names, probe and concept checks, without reading any weights and without
    running any code the recipe names (a trusted recipe's ``module`` target is not built: its layers
    are left to ``dissectkit layers --trust-code``). Missing data or weights files are warnings (they
    are needed only at run time); anything else wrong raises, all method parameters bounded by the
    probe's size included."""
    from dissectkit.host.manager import get_host
    from dissectkit.nn.layers import select_layers

    registry = get_host().registry
    validated = validate_components(recipe, registry)
    column_settings(recipe.output.columns)
    ctx = validation_context(recipe)
    code = {id(ref): field for _, _, ref, field, _ in code_fields(recipe, validated)}
    warnings: list[str] = []
    for kind, path, ref in component_refs(recipe):
        if kind not in ("dissector", "target"):
            continue
        where = f"{kind} '{ref.display}' ({recipe.position(*recipe_path(recipe, path))})"
        warnings += [f"{where}: {line}" for line in missing_weights(registry.get(kind, ref.name), validated[id(ref)], ctx)]
        if kind == "target":
            if id(ref) in code:
                warnings.append(f"layers of target '{ref.display}' not checked: its {code[id(ref)]} names Python code, "
                                "which `validate` never runs (`dissectkit layers --trust-code` builds it and lists them).")
                continue
            try:
                infos = target_layer_infos(ref, recipe, ctx)
            except (WeightsError, DataError) as exc:
                warnings.append(f"layers of target '{ref.display}' not checked: {exc}")
                continue
            select_layers(ref.layers, infos, target=where)
    probe_spec = registry.get("probe", recipe.probe.name)
    has_masks = probe_spec.probe_has_masks(validated[id(recipe.probe)])
    for kind, path, ref in component_refs(recipe):
        if kind not in ("probe", "concepts", "method"):
            continue
        where = f"{kind} '{ref.display}' ({recipe.position(*recipe_path(recipe, path))})"
        if id(ref) in code:
            warnings.append(f"{where} not built: its {code[id(ref)]} names Python code, which `validate` never runs.")
            continue
        try:
            obj = registry.get(kind, ref.name).build(validated[id(ref)], ctx)
        except (WeightsError, DataError) as exc:
            warnings.append(f"{where}: {exc}")
            continue
        if kind == "concepts":
            problems = category_problems(recipe, validated, concept_list(obj))
            if problems:
                raise RecipeError(f"Recipe {recipe.source or ''} names categories its concept set lacks:\n" + "\n".join(problems))
        if kind == "probe":
            warnings += probe_notes(ref.display, obj)
            problems = probe_size_problems(recipe, validated, len(obj), registry)
            if problems:
                raise RecipeError(f"Recipe {recipe.source or ''} asks more of the probe than it has:\n" + "\n".join(problems))
        if kind == "method":
            check_masks_available(ref.display, obj, recipe.probe.name, has_masks)
    if recipe.concepts.groups:
        from dissectkit.labelling.groups import read_groups

        try:
            read_groups(recipe.concepts.groups)
        except DataError as exc:
            warnings.append(f"concepts.groups ({recipe.position('concepts')}): {exc}")
    return warnings


def probe_notes(label: str, probe: Any) -> list[str]:
    """A warning naming the files a probe left out (missing, refused, unreadable names), if any."""
    skipped = list(probe.skipped)
    if not skipped:
        return []
    shown = "; ".join(f"{i}: {why}" for i, why in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return [f"probe '{label}' leaves out {len(skipped)} listed file(s) ({shown}{more}); `dissectkit run` records "
            "them in manifest.json (probe_skipped)."]


def recipe_json_schema() -> dict[str, Any]:
    """The recipe schema with, for each component kind, a ``oneOf`` over the installed components'
    ``{name, params}`` shapes."""
    from dissectkit.host.manager import get_host

    schema = Recipe.model_json_schema()
    defs = schema.setdefault("$defs", {})
    registry = get_host().registry
    for kind in KINDS:
        options = []
        for spec in registry.list(kind):
            params_schema = spec.params.model_json_schema()
            for name, d in params_schema.pop("$defs", {}).items():
                defs.setdefault(name, d)
            options.append({
                "type": "object",
                "description": spec.description,
                "properties": {"name": {"const": spec.name}, "params": params_schema},
                "required": ["name"],
            })
        defs[f"{kind}_component"] = {"oneOf": options} if options else {"type": "object"}
    schema["x-dissectkit-components"] = {kind: f"#/$defs/{kind}_component" for kind in KINDS}
    return schema
