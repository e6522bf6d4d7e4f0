"""The component registry: kind + name -> factory, pydantic ``Params`` model and metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from dissectkit.errors import ComponentError, PluginError, did_you_mean

KINDS = ("dissector", "target", "probe", "concepts", "similarity", "method", "reporter")


class Params(BaseModel):
    """Base of every component's parameter model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class NoParams(Params):
    """For components without parameters."""


@dataclass(frozen=True)
class ComponentSpec:
    """What a plugin registers: a named factory of one kind with its parameter model."""

    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel] = NoParams
    distribution: str = "unknown"
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self, raw: dict[str, Any] | None, where: str = "") -> BaseModel:
        """Validate raw parameters with the component's model; errors name each field."""
        try:
            return self.params.model_validate(raw or {})
        except ValidationError as exc:
            raise ComponentError(format_validation_error(exc, f"{where or self.kind} '{self.name}' params")) from None


def format_validation_error(exc: ValidationError, what: str) -> str:
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


class Registry:
    """Holds the component specs registered by every plugin."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], ComponentSpec] = {}
        self.current_distribution = "unknown"

    def add(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        params: type[BaseModel] = NoParams,
        description: str = "",
        **metadata: Any,
    ) -> ComponentSpec:
        """Register one component. ``factory(params, ctx)`` returns an instance."""
        if kind not in KINDS:
            raise PluginError(
                f"Plugin '{self.current_distribution}' registered {name!r} with unknown kind {kind!r}; "
                f"kinds are {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}"
            )
        key = (kind, name)
        if key in self._specs:
            other = self._specs[key].distribution
            raise PluginError(
                f"Duplicate {kind} name {name!r}: registered by both '{other}' and "
                f"'{self.current_distribution}'. Uninstall one, or block it with "
                f"DISSECTKIT_DISABLE_PLUGINS={self.current_distribution}."
            )
        spec = ComponentSpec(kind, name, factory, params, self.current_distribution, description, dict(metadata))
        self._specs[key] = spec
        return spec

    def list(self, kind: str | None = None) -> list[ComponentSpec]:
        if kind is not None:
            check_kind(kind)
        return sorted(
            (s for s in self._specs.values() if kind is None or s.kind == kind), key=lambda s: (KINDS.index(s.kind), s.name)
        )

    def names(self, kind: str) -> list[str]:
        return [s.name for s in self.list(kind)]

    def get(self, kind: str, name: str) -> ComponentSpec:
        check_kind(kind)
        spec = self._specs.get((kind, name))
        if spec is None:
            names = self.names(kind)
            raise ComponentError(
                f"Unknown {kind} {name!r}.{did_you_mean(name, names)} "
                f"Available {kind} components: {', '.join(names) or '(none)'}. "
                f"`dissectkit list {kind}` shows them; a plugin may provide more."
            )
        return spec


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ComponentError(f"Unknown component kind {kind!r}; kinds are {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
