"""``dissectkit validate`` / ``layers`` / ``schema``: everything checkable without running models."""

from __future__ import annotations

from typing import Any

from dissectkit.components import check_masks_available
from dissectkit.errors import DataError, WeightsError
from dissectkit.recipe import Recipe, TargetRef, _recipe_path, component_refs, validate_components
from dissectkit.registry import KINDS
from dissectkit.types import LayerInfo


def target_layer_infos(ref: TargetRef, recipe: Recipe, ctx: Any = None) -> list[LayerInfo]:
    """A target's layers: from its spec's ``layers`` metadata (architecture only, no weights) when
    it offers one, else by building the target."""
    from dissectkit.engine import build_context
    from dissectkit.plugins import get_host

    spec = get_host().registry.get("target", ref.name)
    params = spec.validate(ref.params, where="target")
    ctx = ctx or build_context(recipe)
    layers_fn = spec.metadata.get("layers")
    if callable(layers_fn):
        return list(layers_fn(params, ctx))
    return list(spec.build(params, ctx).layers())


def validate_recipe(recipe: Recipe) -> list[str]:
    """Pass 2 plus layer names, probe and concept checks. Missing data or weights files are
    warnings (they are needed only at run time); anything else wrong raises."""
    from dissectkit.engine import build_context
    from dissectkit.layers import select_layers
    from dissectkit.plugins import get_host

    registry = get_host().registry
    validated = validate_components(recipe, registry)
    ctx = build_context(recipe)
    warnings: list[str] = []
    for ref in recipe.targets:
        try:
            infos = target_layer_infos(ref, recipe, ctx)
        except (WeightsError, DataError) as exc:
            warnings.append(f"layers of target '{ref.display}' not checked: {exc}")
            continue
        select_layers(ref.layers, infos, target=f"target '{ref.display}' ({recipe.position(*_recipe_path(recipe, ('targets', 0)))})")
    probe = None
    for kind, path, ref in component_refs(recipe):
        if kind not in ("probe", "concepts", "method"):
            continue
        try:
            obj = registry.get(kind, ref.name).build(validated[id(ref)], ctx)
        except (WeightsError, DataError) as exc:
            warnings.append(f"{kind} '{ref.display}' ({recipe.position(*_recipe_path(recipe, path))}): {exc}")
            continue
        if kind == "probe":
            probe = obj
        if kind == "method":
            check_masks_available(ref.display, obj, recipe.probe.name, probe)
    return warnings


def recipe_json_schema() -> dict[str, Any]:
    """The recipe schema with, for each component kind, a ``oneOf`` over the installed components'
    ``{name, params}`` shapes."""
    from dissectkit.plugins import get_host

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
