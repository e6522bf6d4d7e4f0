"""The base of every component's parameter model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Params(BaseModel):
    """Base of every component's parameter model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class NoParams(Params):
    """For components without parameters."""


def format_validation_error(exc: ValidationError, what: str) -> str:
    """A pydantic error as one line per field of ``what``, naming unknown and missing parameters."""
    lines = [f"Invalid {what}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter"
        elif err["type"] == "missing":
            msg = "required parameter is missing"
        lines.append(f"  - {loc}: {msg} (got {err.get('input')!r})" if err["type"] != "missing" else f"  - {loc}: {msg}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- field markers
PYTHON_CALLABLE = "x-dissectkit-python-callable"
PROBE_BOUND = "x-dissectkit-probe-bound"
PARAMS_OF = "x-dissectkit-params-of"
CONCEPT_CATEGORIES = "x-dissectkit-concept-categories"

PythonCallable = Annotated[str, Field(
    json_schema_extra={PYTHON_CALLABLE: True},
    description="a Python callable, 'package.module:callable'; a recipe runs it only with --trust-code "
    "or runtime.trust_code: true",
)]
"""A parameter naming Python code (``package.module:callable``): a recipe that sets it is refused
unless the user trusts its code (``--trust-code`` / ``runtime.trust_code``), and ``validate``
never builds the component."""


def probe_bound(kind: Literal["count", "fraction"]) -> Any:
    """Field metadata for a parameter bounded by the probe's size, checked by ``validate`` and at run
    start: ``count``, at most the number of probe images (``top_k``); ``fraction``, a share that must
    select at least one image (``top_fraction``)."""
    return Field(json_schema_extra={PROBE_BOUND: kind})


def params_of(kind: str, name_field: str) -> Any:
    """Field metadata for a dict holding the params of another component: of ``kind``, named by the
    sibling field ``name_field`` (a method's ``similarity_params``); the probe-size check looks inside."""
    return Field(json_schema_extra={PARAMS_OF: [kind, name_field]})


def concept_categories() -> Any:
    """Field metadata for a list of concept categories (the study's ``general_categories``): ``validate``
    and the run's start check each (the default too) against the categories of the recipe's concept
    set, before any compute."""
    return Field(json_schema_extra={CONCEPT_CATEGORIES: True})


def marked_fields(params: BaseModel, marker: str, path: str = "params") -> list[tuple[str, Any, Any]]:
    """``(field path, value, marker value)`` of every field of ``params`` (nested models, lists and
    dicts of them included) whose metadata carries ``marker``."""
    out: list[tuple[str, Any, Any]] = []
    for name, info in type(params).model_fields.items():
        value = getattr(params, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if marker in extra and value is not None:
            out.append((f"{path}.{name}", value, extra[marker]))
        for sub, item in _models(value, f"{path}.{name}"):
            out += marked_fields(item, marker, sub)
    return out


def _models(value: Any, path: str) -> list[tuple[str, BaseModel]]:
    if isinstance(value, BaseModel):
        return [(path, value)]
    if isinstance(value, list | tuple):
        return [hit for i, v in enumerate(value) for hit in _models(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _models(v, f"{path}.{k}")]
    return []
