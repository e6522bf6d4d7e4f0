"""The component registry: kind + name -> factory, pydantic ``Params`` model and metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from dissectkit.base.errors import ComponentError, DissectkitError, PluginError, did_you_mean
from dissectkit.base.params import NoParams

KINDS = ("dissector", "target", "probe", "concepts", "similarity", "method", "reporter")


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
    plugin: str = ""
    """The plugin (entry point, or ``builtin:<module>``) that registered it."""

    @property
    def origin(self) -> str:
        """Who registered it, for messages: ``distribution 'x' (plugin 'y')``."""
        return f"distribution '{self.distribution}'" + (f" (plugin '{self.plugin}')" if self.plugin else "")

    def build(self, params: BaseModel, ctx: Any) -> Any:
        """Call the factory. A factory failing with anything but a ``DissectkitError`` is reported
        as the plugin's fault, naming its distribution and the component (never "internal error")."""
        try:
            return self.factory(params, ctx)
        except DissectkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - a third-party factory's bug is named, not hidden
            raise PluginError(
                f"The factory of {self.kind} '{self.name}' from {self.origin} failed: "
                f"{type(exc).__name__}: {exc}. This is a bug or a missing requirement of that plugin; "
                f"report it to its authors, or disable it with DISSECTKIT_DISABLE_PLUGINS={self.distribution}."
            ) from exc

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
    """Holds the component specs registered by every plugin.

    The host registers plugins one at a time inside :meth:`session`: a duplicate name or an
    unknown kind is then recorded as a problem of that plugin (all of them, not only the first)
    and the host drops everything the plugin added, so a failed plugin leaves nothing behind.
    Outside a session (a registry built by hand) the first problem raises ``PluginError``.
    """

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], ComponentSpec] = {}
        self.current_distribution = "unknown"
        self.current_plugin = ""
        self._session: _Session | None = None

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
        spec = ComponentSpec(
            kind, name, factory, params, self.current_distribution, description, dict(metadata), self.current_plugin
        )
        problem = self._problem(spec)
        if problem is not None:
            if self._session is None:
                raise PluginError(problem)
            self._session.problems.append(problem)
            return spec
        self._specs[(kind, name)] = spec
        if self._session is not None:
            self._session.added.append((kind, name))
        return spec

    def _problem(self, spec: ComponentSpec) -> str | None:
        who = f"Plugin '{self.current_plugin or spec.distribution}' (distribution '{spec.distribution}')"
        if spec.kind not in KINDS:
            return (
                f"{who} registered {spec.name!r} with unknown kind {spec.kind!r}; "
                f"kinds are {', '.join(KINDS)}.{did_you_mean(spec.kind, KINDS)}"
            )
        if not isinstance(spec.name, str) or not spec.name:
            return f"{who} registered a {spec.kind} without a name (got {spec.name!r})."
        if not callable(spec.factory):
            return f"{who} registered {spec.kind} {spec.name!r} with a factory that is not callable."
        taken = self._specs.get((spec.kind, spec.name))
        if taken is not None:
            return (
                f"{who} registers {spec.kind} {spec.name!r}, a name {taken.origin} already has. "
                f"The name stays with '{taken.distribution}'; rename the component in "
                f"'{spec.distribution}', or block '{taken.distribution}' with "
                f"DISSECTKIT_DISABLE_PLUGINS={taken.plugin or taken.distribution}."
            )
        return None

    @contextmanager
    def session(self, plugin: str, distribution: str) -> Iterator[_Session]:
        """Register one plugin's components; see the class docstring."""
        session = _Session()
        self._session, self.current_plugin, self.current_distribution = session, plugin, distribution
        try:
            yield session
        finally:
            self._session, self.current_plugin, self.current_distribution = None, "", "unknown"

    def discard(self, keys: Iterable[tuple[str, str]]) -> None:
        """Remove components (the host's rollback of a failed or unregistered plugin)."""
        for key in keys:
            self._specs.pop(key, None)

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


@dataclass
class _Session:
    """What one plugin registered, and what went wrong, while the host registers it."""

    added: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ComponentError(f"Unknown component kind {kind!r}; kinds are {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
