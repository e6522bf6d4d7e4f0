"""Recipes: YAML files that name one component of each kind, validated in two passes.

Pass 1 validates the envelope (this module's pydantic models: unknown keys are errors with file,
line and column). Pass 2 (:func:`validate_components`) validates each component's ``params`` with
that component's own ``Params`` model. ``extends:`` deep-merges a base recipe (paths relative to the
extending file, cycles detected) and ``--set a.b=c`` overrides are applied last.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from dissectkit.base.errors import RecipeError, did_you_mean

Position = tuple[str, int, int]  # file, line (1-based), column (1-based)


# --------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ComponentRef(_Strict):
    """A component by name with its parameters (``name`` alone may be written as a plain string)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, description="display name when a recipe lists several")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @property
    def display(self) -> str:
        return self.label or self.name


class TargetRef(ComponentRef):
    """A target with the layers to dissect and how their outputs are pooled."""

    layers: list[str] = Field(min_length=1, description="exact names or glob patterns")
    pool: Literal["mean", "max"] = "mean"
    token_pool: Literal["cls", "mean"] = "cls"
    role: str | None = Field(default=None, description="its part in a study: G (general), M (domain), C or C-<task> (fine-tuned)")

    @field_validator("layers", mode="before")
    @classmethod
    def _one_layer(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class StudyConfig(_Strict):
    """Turns on the Mammo-CLIP Dissect study analysis (docs/study.md) after the run."""

    preset: Literal["mcd"] | None = Field(default=None, description="fill the published runs' method params (top 10 concepts, top_k=100)")
    top_concepts: int = Field(default=10, ge=1, description="concepts kept per neuron (clip-dissect top_m, reporters) and listed in study/neurons.csv")
    general_categories: list[str] = Field(default_factory=lambda: ["distractor"], description="categories that are not mammography concepts")
    top_categories: int = Field(default=3, ge=1, description="categories per layer in the top-categories figure")


class OutputConfig(_Strict):
    dir: str | None = Field(default=None, description="default: runs/<recipe name>")
    reporters: list[ComponentRef] = Field(default_factory=lambda: [ComponentRef(name="csv"), ComponentRef(name="json")])

    @model_validator(mode="after")
    def _each_reporter_once(self) -> OutputConfig:
        names = [r.name for r in self.reporters]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"output.reporters lists {', '.join(repr(n) for n in twice)} more than once; a reporter writes "
                "the same files each time, so a second one would overwrite the first: list each reporter once"
            )
        return self


class RuntimeConfig(_Strict):
    device: str = "auto"
    batch_size: int = Field(default=32, ge=1)
    num_workers: int = Field(default=0, ge=0)
    offline: bool = False
    seed: int = 0
    strict_data: bool = False
    cache_dir: str | None = None
    chunk_images: int = Field(default=512, ge=1, description="images per cached activation chunk")
    threads: int | None = Field(
        default=None, ge=1,
        description="torch intra-op threads per process (default: the CPUs available to the process, "
        "shared by the ranks on this machine, less one per DataLoader worker; at least 1)",
    )


class Recipe(_Strict):
    """A validated recipe. Single or plural forms are accepted for dissector, target and method."""

    schema_version: Literal[1] = 1
    name: str | None = None
    extends: str | list[str] | None = None
    dissector: ComponentRef | None = None
    dissectors: list[ComponentRef] = Field(default_factory=list)
    target: TargetRef | None = None
    targets: list[TargetRef] = Field(default_factory=list)
    probe: ComponentRef
    concepts: ComponentRef
    method: ComponentRef | None = None
    methods: list[ComponentRef] = Field(default_factory=list)
    output: OutputConfig = Field(default_factory=OutputConfig)
    study: StudyConfig | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    _source: Path | None = PrivateAttr(default=None)
    _positions: dict[tuple, Position] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _plural(self) -> Recipe:
        for single, plural in (("dissector", "dissectors"), ("target", "targets"), ("method", "methods")):
            one, many = getattr(self, single), getattr(self, plural)
            if one is not None and many:
                raise ValueError(f"give either '{single}' or '{plural}', not both")
            if one is not None:
                setattr(self, plural, [one])
                setattr(self, single, None)
            if not getattr(self, plural):
                raise ValueError(f"'{single}' is required (or a list under '{plural}')")
        for plural in ("dissectors", "targets", "methods"):
            _unique_labels(getattr(self, plural), plural)
        if self.study is not None:
            from dissectkit.study.presets import apply_study

            apply_study(self.study.preset, self.study.top_concepts, self.methods, self.output.reporters)
        return self

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def run_name(self) -> str:
        return self.name or (self._source.stem if self._source else "run")

    @property
    def output_dir(self) -> Path:
        return Path(self.output.dir) if self.output.dir else Path("runs") / self.run_name

    def position(self, *path: Any) -> str:
        """``file:line:col`` of a key, or the file name when unknown."""
        for n in range(len(path), 0, -1):
            pos = self._positions.get(tuple(path[:n]))
            if pos:
                return f"{pos[0]}:{pos[1]}:{pos[2]}"
        return str(self._source or "<recipe>")

    def resolved_dict(self) -> dict[str, Any]:
        """The recipe as plain data, plural forms, defaults filled (written next to results)."""
        data = self.model_dump(mode="json", exclude={"extends", "dissector", "target", "method"})
        return data


def _unique_labels(refs: list[ComponentRef], plural: str) -> None:
    seen: dict[str, int] = {}
    for ref in refs:
        seen[ref.display] = seen.get(ref.display, 0) + 1
    if any(v > 1 for v in seen.values()):
        counts: dict[str, int] = {}
        for ref in refs:
            if seen[ref.display] > 1 and ref.label is None:
                counts[ref.name] = counts.get(ref.name, 0) + 1
                ref.label = f"{ref.name}-{counts[ref.name]}"
        labels = [r.display for r in refs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels in '{plural}' must be unique, got {labels}")


# --------------------------------------------------------------------------- YAML with positions
def _read_yaml(path: Path) -> tuple[Any, dict[tuple, Position]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"Recipe file not found: {path}. Check the path (relative paths start from {Path.cwd()}).") from None
    except OSError as exc:
        raise RecipeError(f"Cannot read recipe {path}: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"YAML syntax error at {where}: {problem}. Fix the YAML (indentation, colons, quotes).") from None
    positions: dict[tuple, Position] = {}
    if node is None:
        return {}, positions
    data = _construct(node, (), str(path), positions, yaml.SafeLoader(""))
    return data, positions


def _construct(node: yaml.Node, path: tuple, file: str, positions: dict[tuple, Position], loader: yaml.SafeLoader) -> Any:
    """Build plain data from a composed node (safe constructors only), recording each key's position."""
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            positions[path + (key,)] = (file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _construct(value_node, path + (key,), file, positions, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            positions[path + (i,)] = (file, item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_construct(item, path + (i,), file, positions, loader))
        return items
    return loader.construct_object(node, deep=True)


def deep_merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key (recursively); anything else in ``override`` replaces ``base``."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(override)


def _load_merged(path: Path, stack: tuple[Path, ...]) -> tuple[dict[str, Any], dict[tuple, Position]]:
    path = path.resolve() if path.exists() else path
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise RecipeError(f"`extends` cycle: {chain}. Remove one of the `extends:` entries.")
    data, positions = _read_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError(f"Recipe {path} must be a mapping of keys (dissector, target, probe, ...), got {type(data).__name__}.")
    parents = data.get("extends") or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict[str, Any] = {}
    merged_pos: dict[tuple, Position] = {}
    for parent in parents:
        parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not parent_path.exists():
            raise RecipeError(f"{_fmt(positions.get(('extends',)), path)}: extended recipe {parent_path} not found.")
        pdata, ppos = _load_merged(parent_path, (*stack, path))
        pdata.pop("extends", None)
        merged = deep_merge(merged, pdata)
        merged_pos.update(ppos)
    merged = deep_merge(merged, data)
    merged_pos.update(positions)
    return merged, merged_pos


def _fmt(pos: Position | None, fallback: Path) -> str:
    return f"{pos[0]}:{pos[1]}:{pos[2]}" if pos else str(fallback)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise RecipeError(f"Override {text!r} must look like key.path=value (e.g. runtime.batch_size=16).")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError(f"Override {text!r} has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = {}
            node[part] = nxt
        elif not isinstance(nxt, dict | list):
            raise RecipeError(f"Override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is a value, not a mapping.")
        node = nxt
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def load_recipe(path: Any, overrides: Sequence[str] | Iterable[str] = ()) -> Recipe:
    """Read a recipe file, resolve ``extends``, apply overrides, validate the envelope (pass 1)."""
    path = Path(path)
    data, positions = _load_merged(path, ())
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(data, parts, value)
        singular = {"dissectors": "dissector", "targets": "target", "methods": "method"}.get(parts[0])
        if singular and len(parts) == 1:
            data.pop(singular, None)
    data.pop("extends", None)
    return recipe_from_dict(data, source=path, positions=positions)


def recipe_from_dict(data: dict[str, Any], source: Path | None = None, positions: dict[tuple, Position] | None = None) -> Recipe:
    positions = positions or {}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_format_envelope_errors(exc, data, source, positions)) from None
    recipe._source = source
    recipe._positions = positions
    return recipe


def _format_envelope_errors(exc: ValidationError, data: dict, source: Path | None, positions: dict) -> str:
    lines = [f"Invalid recipe {source or ''}:".replace(" :", ":")]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where = _nearest(positions, loc, source)
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed)
            lines.append(f"  {where}: unknown key '{key}'.{hint} Allowed here: {', '.join(allowed)}.")
        elif err["type"] == "missing":
            lines.append(f"  {where}: required key '{key}' is missing.")
        else:
            lines.append(f"  {where}: {key}: {err['msg']} (got {err.get('input')!r}).")
    return "\n".join(lines)


def _nearest(positions: dict, loc: tuple, source: Path | None) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in positions:
            f, line, col = positions[loc[:n]]
            return f"{f}:{line}:{col}"
    return str(source or "<recipe>")


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _model_of(annotation: Any) -> Any:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        m = _model_of(arg)
        if m is not None:
            return m
    return None


# --------------------------------------------------------------------------- pass 2
def component_refs(recipe: Recipe) -> list[tuple[str, tuple, ComponentRef]]:
    """(kind, recipe path, ref) of every component the recipe names."""
    refs: list[tuple[str, tuple, ComponentRef]] = []
    for i, r in enumerate(recipe.dissectors):
        refs.append(("dissector", ("dissectors", i), r))
    for i, r in enumerate(recipe.targets):
        refs.append(("target", ("targets", i), r))
    refs.append(("probe", ("probe",), recipe.probe))
    refs.append(("concepts", ("concepts",), recipe.concepts))
    for i, r in enumerate(recipe.methods):
        refs.append(("method", ("methods", i), r))
    for i, r in enumerate(recipe.output.reporters):
        refs.append(("reporter", ("output", "reporters", i), r))
    return refs


def recipe_path(recipe: Recipe, path: tuple) -> tuple:
    """Map a normalised path (``dissectors.0``) back to what the file says (``dissector``)."""
    plural_single = {"dissectors": "dissector", "targets": "target", "methods": "method"}
    if path and path[0] in plural_single and (path[0], path[1]) not in recipe._positions:
        return (plural_single[path[0]], *path[2:])
    return path


def validate_components(recipe: Recipe, registry: Any) -> dict[int, Any]:
    """Pass 2: every component exists and its params validate. Returns ``id(ref) -> Params``."""
    from dissectkit.base.errors import ComponentError

    problems: list[str] = []
    validated: dict[int, Any] = {}
    for kind, path, ref in component_refs(recipe):
        where = recipe.position(*recipe_path(recipe, path))
        try:
            spec = registry.get(kind, ref.name)
            validated[id(ref)] = spec.validate(ref.params, where=f"{kind}")
        except ComponentError as exc:
            problems.append(f"  {where}: {str(exc).replace(chr(10), chr(10) + '    ')}")
    if problems:
        raise RecipeError(f"Recipe {recipe.source or ''} has invalid components:\n" + "\n".join(problems))
    return validated
