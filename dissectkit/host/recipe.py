"""Recipes: YAML files that name one component of each kind, validated in two passes: the envelope
(pass 1, this module's models) and each component's ``params`` (pass 2, :func:`validate_components`)."""

from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

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

from dissectkit.base.errors import ComponentError, RecipeError, did_you_mean
from dissectkit.base.params import CONCEPT_CATEGORIES, PARAMS_OF, PROBE_BOUND, PYTHON_CALLABLE, marked_fields
from dissectkit.host.extends import Key, Position, Positions, load_merged, merge, preset_path

PLURAL_SINGLE = {"dissectors": "dissector", "targets": "target", "methods": "method"}


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


class ConceptsRef(ComponentRef):
    """The concept set, with an optional synonym-groups file (docs/methods.md, "Concept groups")."""

    groups: str | None = Field(default=None, description="synonym groups file (YAML, `dissectkit concepts audit` "
                               "writes one): labels, accuracy and the study are also read at group level")


class StudyConfig(_Strict):
    """Deprecated shorthand (docs/study.md): ``extends: preset:study`` (``preset:mcd`` with ``preset:
    mcd``) and the ``study`` reporter with the other keys as its params."""

    preset: Literal["mcd"] | None = Field(default=None, description="extend preset:mcd (the published runs' params) instead of preset:study")
    top_concepts: int | None = Field(default=None, ge=1, description="study reporter: concepts listed per neuron in study/neurons.csv (default 10)")
    general_categories: list[str] | None = Field(default=None, description="study reporter: categories that are not mammography concepts")
    top_categories: int | None = Field(default=None, ge=1, description="study reporter: categories per layer in the top-categories figure")


class OutputConfig(_Strict):
    dir: str | None = Field(default=None, description="default: runs/<recipe name>")
    reporters: list[ComponentRef] = Field(default_factory=lambda: [ComponentRef(name="csv"), ComponentRef(name="json")])
    columns: dict[str, bool | dict[str, Any]] = Field(
        default_factory=dict,
        description="per-neuron column groups (label quality, ...): `false` turns one off, a mapping sets its "
        "params (docs/methods.md); every group is on with its defaults otherwise",
    )

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
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        default="auto",
        description="DataLoader worker processes reading the probe; auto: the CPUs beside the compute threads (docs/scaling.md)",
    )
    offline: bool = False
    seed: int = 0
    strict_data: bool = False
    cache_dir: str | None = None
    chunk_images: int = Field(default=512, ge=1, description="images per cached activation chunk")
    trust_code: bool = Field(
        default=False,
        description="run the Python callables the recipe names (a `module` target's `factory`); "
        "without it such a recipe is refused (the CLI's --trust-code sets it)",
    )
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
    concepts: ConceptsRef
    method: ComponentRef | None = None
    methods: list[ComponentRef] = Field(default_factory=list)
    output: OutputConfig = Field(default_factory=OutputConfig)
    study: StudyConfig | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    _source: Path | None = PrivateAttr(default=None)
    _positions: dict[Key, Position] = PrivateAttr(default_factory=dict)

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
        return _nearest(self._positions, path, self._source)

    def resolved_dict(self) -> dict[str, Any]:
        """The recipe as plain data, plural forms, defaults filled (written next to results)."""
        return self.model_dump(mode="json", exclude={"extends", "dissector", "target", "method", "study"})


def _unique_labels(refs: list[ComponentRef], plural: str) -> None:
    seen = Counter(ref.display for ref in refs)
    if any(v > 1 for v in seen.values()):
        counts: dict[str, int] = {}
        for ref in refs:
            if seen[ref.display] > 1 and ref.label is None:
                counts[ref.name] = counts.get(ref.name, 0) + 1
                ref.label = f"{ref.name}-{counts[ref.name]}"
        labels = [r.display for r in refs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels in '{plural}' must be unique, got {labels}")


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


COMPONENT_KEYS = ("probe", "concepts", "dissector", "target", "method")


def is_component_path(parts: Sequence[Any]) -> bool:
    """Whether ``parts`` leads to a component (``probe``, ``methods.0``, ``output.reporters.1``)."""
    parts = [str(p) for p in parts]
    return ((len(parts) == 1 and parts[0] in COMPONENT_KEYS)
            or (len(parts) == 2 and parts[0] in PLURAL_SINGLE and parts[1].isdigit())
            or (len(parts) == 3 and parts[:2] == ["output", "reporters"] and parts[2].isdigit()))


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``parts`` to ``value``. A component written as a bare name becomes ``{name: ...}`` when an
    override reaches into it; setting a component's ``name`` to another component drops the params
    of the one it replaces (they belong to that component), and so does naming another nested component
    in a component's params (``method.params.similarity`` drops ``similarity_params``)."""
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = {}
            node[part] = nxt
        elif isinstance(nxt, str) and is_component_path(parts[: i + 1]):
            nxt = {"name": nxt}
            node[part] = nxt
        elif not isinstance(nxt, dict | list):
            raise RecipeError(f"Override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is a value, not a mapping.")
        node = nxt
    if isinstance(node, list):
        node[int(parts[-1])] = value
        return
    if parts[-1] == "name" and is_component_path(parts[:-1]) and node.get("name") not in (None, value):
        node.pop("params", None)
    elif len(parts) > 1 and parts[-2] == "params" and isinstance(node.get(parts[-1]), str) and node[parts[-1]] != value:
        node.pop(f"{parts[-1]}_params", None)  # a nested component (similarity: + similarity_params:) too
    node[parts[-1]] = value


def load_recipe(path: Any, overrides: Sequence[str] | Iterable[str] = ()) -> Recipe:
    """Read a recipe file, apply overrides, merge ``extends``, validate the envelope (pass 1). An override
    edits the file's own data before its bases are merged in, unless it runs through a list only a base has."""
    parsed = [parse_override(text) for text in overrides]
    paths = [parts for parts, _ in parsed]

    def names_first(pv: tuple[list[str], Any]) -> bool:
        parts = pv[0]
        own = [*parts[:-1], f"{parts[-1]}_params"]
        return parts[-1] != "name" and not any(q[: len(own)] == own for q in paths)

    parsed.sort(key=names_first)
    later: list[tuple[list[str], Any]] = []  # component names first: their params are set after them

    def edit(own: dict[str, Any]) -> None:
        for parts, value in parsed:
            if _list_missing(own, parts):
                later.append((parts, value))
            else:
                _override(own, parts, value)

    data, positions = load_merged(Path(path), edit=edit)
    for parts, value in later:
        _override(data, parts, value)
    return recipe_from_dict(data, source=Path(path), positions=positions)


def _list_missing(data: dict[str, Any], parts: list[str]) -> bool:
    """Whether an override's path runs through a list index ``data`` does not have."""
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return any(p.isdigit() for p in parts[i:-1])
    return False


def _override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    if len(parts) == 1 and parts[0] in PLURAL_SINGLE and isinstance(value, list):
        value = _keep_own_params(data, parts[0], value)
    apply_override(data, parts, value)
    if len(parts) == 1 and parts[0] in PLURAL_SINGLE:  # a whole list replaces the single form
        data.pop(PLURAL_SINGLE[parts[0]], None)


def _keep_own_params(data: dict[str, Any], plural: str, items: list[Any]) -> list[Any]:
    """A list override (``--method a``, ``--set methods=[a, b]``): an item given by name alone that the
    recipe already lists (by name or label) keeps the recipe's params and label."""
    single = data.get(PLURAL_SINGLE[plural])
    own = [single] if single is not None else data.get(plural) or []
    out = []
    for item in items:
        match = None
        if isinstance(item, str):
            match = next((o for o in own if isinstance(o, dict) and item in (o.get("label"), o.get("name"))), None)
        out.append(copy.deepcopy(match) if match is not None else item)
    return out


def recipe_from_dict(data: dict[str, Any], source: Path | None = None, positions: Positions | None = None) -> Recipe:
    """Validate recipe data (pass 1), expanding a ``study:`` section first."""
    data, positions = study_section(data, positions or {})
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_format_envelope_errors(exc, data, source, positions)) from None
    recipe._source = source
    recipe._positions = positions
    return recipe


def study_section(data: dict[str, Any], positions: Positions) -> tuple[dict[str, Any], Positions]:
    """The deprecated ``study:`` section as what it stands for: the recipe extending
    ``preset:study`` (``preset:mcd``), with the ``study`` reporter (the section's other keys as its
    params) after its reporters. An invalid section is left to pass 1."""
    if data.get("study") is None:
        return data, positions
    try:
        config = StudyConfig.model_validate(data.get("study"))
    except ValidationError:
        return data, positions
    warnings.warn("The recipe's `study:` section is deprecated: write `extends: preset:mcd` (or preset:study) and "
                  "list the `study` reporter in output.reporters (docs/study.md).", DeprecationWarning, stacklevel=3)
    data = {k: v for k, v in data.items() if k != "study"}
    output = dict(data.get("output") or {})
    reporters = list(output.get("reporters") or [r.name for r in OutputConfig().reporters])
    params = config.model_dump(exclude_none=True, exclude={"preset"})
    output["reporters"] = [*reporters, {"name": "study", "params": params}]
    if ("study",) in positions:
        positions = {**positions, ("output", "reporters", len(reporters)): positions[("study",)]}
    preset, preset_pos = load_merged(preset_path(config.preset or "study"))
    return merge(preset, {**data, "output": output}, preset_pos, positions)


def _format_envelope_errors(exc: ValidationError, data: dict[str, Any], source: Path | None, positions: Positions) -> str:
    lines = [f"Invalid recipe {source or ''}:".replace(" :", ":")]
    where_top = str(source or "<recipe>")
    for plural, single in PLURAL_SINGLE.items():  # every missing component at once, with the others
        if isinstance(data, dict) and data.get(single) is None and not data.get(plural):
            lines.append(f"  {where_top}: required key '{single}' is missing (or a list under '{plural}').")
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where = _nearest(positions, loc, source)
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "value_error" and not loc:
            text = str(err.get("ctx", {}).get("error") or err["msg"]).removeprefix("Value error, ")
            if "is required (or a list under" not in text:
                lines.append(f"  {where}: {text}.")
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            hint = did_you_mean(str(loc[-1]), allowed)
            lines.append(f"  {where}: unknown key '{key}'.{hint} Allowed here: {', '.join(allowed)}.")
        elif err["type"] == "missing":
            lines.append(f"  {where}: required key '{key}' is missing.")
        else:
            lines.append(f"  {where}: {key}: {err['msg']} (got {err.get('input')!r}).")
    return "\n".join(lines)


def _nearest(positions: Positions, loc: Key, source: Path | None) -> str:
    for n in range(len(loc), 0, -1):
        if loc[:n] in positions:
            f, line, col = positions[loc[:n]]
            return f"{f}:{line}:{col}"
    return str(source or "<recipe>")


def _allowed_keys(loc: Key) -> list[str]:
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
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        m = _model_of(arg)
        if m is not None:
            return m
    return None


def component_refs(recipe: Recipe) -> list[tuple[str, Key, ComponentRef]]:
    """(kind, recipe path, ref) of every component the recipe names."""
    refs: list[tuple[str, Key, ComponentRef]] = []
    refs += [("dissector", ("dissectors", i), r) for i, r in enumerate(recipe.dissectors)]
    refs += [("target", ("targets", i), r) for i, r in enumerate(recipe.targets)]
    refs.append(("probe", ("probe",), recipe.probe))
    refs.append(("concepts", ("concepts",), recipe.concepts))
    refs += [("method", ("methods", i), r) for i, r in enumerate(recipe.methods)]
    refs += [("reporter", ("output", "reporters", i), r) for i, r in enumerate(recipe.output.reporters)]
    return refs


def recipe_path(recipe: Recipe, path: Key) -> Key:
    """Map a normalised path (``dissectors.0``) back to what the file says (``dissector``)."""
    if path and path[0] in PLURAL_SINGLE and (path[0], path[1]) not in recipe._positions:
        return (PLURAL_SINGLE[path[0]], *path[2:])
    return path


def validate_components(recipe: Recipe, registry: Any) -> dict[int, Any]:
    """Pass 2: every component exists and its params validate. Returns ``id(ref) -> Params``."""
    problems: list[str] = []
    validated: dict[int, Any] = {}
    for kind, path, ref in component_refs(recipe):
        where = recipe.position(*recipe_path(recipe, path))
        try:
            spec = registry.get(kind, ref.name)
            validated[id(ref)] = spec.validate(ref.params, where=f"{kind}")
        except ComponentError as exc:
            problems.append(f"  {where}: {str(exc).replace(chr(10), chr(10) + '    ')}{_inherited(recipe, recipe_path(recipe, path))}")
    if problems:
        raise RecipeError(f"Recipe {recipe.source or ''} has invalid components:\n" + "\n".join(problems))
    if not recipe.runtime.trust_code:
        check_trusted(recipe, validated)
    return validated


def _marked_params(recipe: Recipe, validated: dict[int, Any], marker: str) -> list[tuple[str, str, ComponentRef, str, Any, Any]]:
    """``(kind, position, ref, field path, value, params)`` of every component parameter whose field
    carries ``marker`` (:func:`~dissectkit.base.params.marked_fields`)."""
    out = []
    for kind, path, ref in component_refs(recipe):
        params = validated.get(id(ref))
        if params is None:
            continue
        where = recipe.position(*recipe_path(recipe, path))
        out += [(kind, where, ref, field, value, params) for field, value, _ in marked_fields(params, marker)]
    return out


def code_fields(recipe: Recipe, validated: dict[int, Any]) -> list[tuple[str, str, ComponentRef, str, Any]]:
    """``(kind, position, ref, field path, value)`` of every parameter that names Python code."""
    return [found[:5] for found in _marked_params(recipe, validated, PYTHON_CALLABLE)]


def check_trusted(recipe: Recipe, validated: dict[int, Any]) -> None:
    """A recipe that names Python code is refused unless the user trusts it; nothing is imported."""
    found = code_fields(recipe, validated)
    if not found:
        return
    lines = [f"  {where}: {kind} '{ref.display}' {field} = {value!r}" for kind, where, ref, field, value in found]
    raise RecipeError(
        f"Recipe {recipe.source or ''} names Python code that would run on this machine:\n" + "\n".join(lines) +
        "\nNothing was imported or run. If you wrote or checked this recipe and trust the code it names, pass "
        "--trust-code (or set runtime.trust_code: true), as trust_checkpoint does for pickled checkpoints."
    )


def probe_size_problems(recipe: Recipe, validated: dict[int, Any], n_images: int, registry: Any) -> list[str]:
    """A line for each method (or similarity) parameter bounded by the probe size that this probe of
    ``n_images`` images cannot satisfy (``top_k`` larger than the probe, ...)."""
    problems = []
    for i, ref in enumerate(recipe.methods):
        params = validated.get(id(ref))
        if params is None:
            continue
        where = recipe.position(*recipe_path(recipe, ("methods", i)))
        found = [(f"params.{f}", v, kind) for f, v, kind in _bounded(params, registry, "")]
        for field, value, kind in found:
            if kind == "count" and isinstance(value, int) and value > n_images:
                problems.append(f"  {where}: method '{ref.display}' {field} = {value} is larger than the probe "
                                f"({n_images} images): use at most {n_images}, or a larger probe.")
            elif kind == "fraction" and isinstance(value, float) and int(n_images * value) < 1:
                problems.append(f"  {where}: method '{ref.display}' {field} = {value} selects no image of the probe "
                                f"({n_images} images; it needs at least {math.ceil(1 / value)}): raise it, or use a "
                                "larger probe.")
    return problems


def category_problems(recipe: Recipe, validated: dict[int, Any], concepts: list[Any]) -> list[str]:
    """A line for each category a component's params name (``concept_categories`` fields, set or by
    default: the study's ``general_categories``) that is no category of ``concepts``: such a setting
    would silently match nothing."""
    known = sorted(dict.fromkeys(c.category for c in concepts if getattr(c, "category", None)),
                   key=lambda c: (c.strip().lower(), c))
    shown = (", ".join(map(repr, known[:12])) + (", ..." if len(known) > 12 else "")) if known else \
        "none: the concept set has no categories"
    problems = []
    for kind, where, ref, field, value, params in _marked_params(recipe, validated, CONCEPT_CATEGORIES):
        default = field.count(".") == 1 and field.split(".")[1] not in params.model_fields_set
        for name in [value] if isinstance(value, str) else list(value):
            if name in known:
                continue
            hint = did_you_mean(str(name), known) or next(
                (f" Did you mean {k!r} (spaced as the concept set spells it)?" for k in known
                 if k.strip().lower() == str(name).strip().lower()), "")
            problems.append(
                f"  {where}: {kind} '{ref.display}' {field}{' (the default)' if default else ''} names category "
                f"{name!r}, which concept set '{recipe.concepts.name}' does not have (its categories: {shown})."
                f"{hint} Use one of them, or [] for none.")
    return problems


def _bounded(params: Any, registry: Any, prefix: str) -> list[tuple[str, Any, str]]:
    """The probe-bounded fields of ``params`` and of the component params it holds (``params_of``)."""
    out = [(f"{prefix}{f.removeprefix('params.')}", v, k) for f, v, k in marked_fields(params, PROBE_BOUND)]
    for field, value, (kind, name_field) in marked_fields(params, PARAMS_OF):
        name = getattr(params, name_field, None)
        if not isinstance(name, str) or not isinstance(value, dict):
            continue
        try:
            inner = registry.get(kind, name).validate(value, where=kind)
        except ComponentError:
            continue  # reported by pass 2
        out += _bounded(inner, registry, f"{prefix}{field.removeprefix('params.')}.")
    return out


def _inherited(recipe: Recipe, path: Key) -> str:
    """A note naming the params a component took from an ``extends:`` base, when it has any."""
    own, prefix = recipe._positions.get(path), (*path, "params")
    keys = {k[len(prefix):]: p[0] for k, p in recipe._positions.items() if k[: len(prefix)] == prefix and len(k) > len(prefix)}
    leaves = sorted(".".join(map(str, k)) for k, file in keys.items()
                    if own and file != own[0] and not any(o[: len(k)] == k and len(o) > len(k) for o in keys))
    files = sorted({file for k, file in keys.items() if ".".join(map(str, k)) in leaves})
    return (f"\n    (params {', '.join(leaves)} come from {', '.join(files)}; `null` in the recipe removes an inherited value)"
            if leaves else "")
