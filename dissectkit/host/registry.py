"""The component registry: kind + name -> a typed :class:`ComponentSpec`; plugins register through the
``register`` bound to their hook's kind (:class:`Register`)."""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from dissectkit.base.contract import BASES, adapt
from dissectkit.base.errors import (
    ComponentError,
    DissectkitError,
    PluginComponentError,
    PluginError,
    did_you_mean,
)
from dissectkit.base.params import NoParams, format_validation_error
from dissectkit.base.types import MasksWhen

if TYPE_CHECKING:
    from dissectkit.base.context import BuildContext
    from dissectkit.base.types import LayerInfo

KINDS = ("dissector", "target", "probe", "concepts", "similarity", "method", "reporter")
HOOK_OF_KIND = {
    "dissector": "dissectkit_register_dissectors",
    "target": "dissectkit_register_targets",
    "probe": "dissectkit_register_probes",
    "concepts": "dissectkit_register_concept_sets",
    "similarity": "dissectkit_register_similarities",
    "method": "dissectkit_register_methods",
    "reporter": "dissectkit_register_reporters",
}
"""The registration hook of each kind."""
BUILTIN_DISTRIBUTION = "dissectkit"
_BUILT: dict[type, ComponentSpec] = {}


def built_spec(cls: type) -> ComponentSpec | None:
    """The spec whose factory built an instance of ``cls`` in this process (``None``: none did)."""
    return _BUILT.get(cls)


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component: a named factory of one kind, its parameter model and what the host
    reads about it. Fields after ``licence`` apply to some kinds only (see ``KIND_FIELDS``)."""

    kind: str
    name: str
    factory: Callable[[Any, BuildContext], Any]
    """``factory(params, ctx)`` returns an instance (validated ``params``, a ``BuildContext``)."""
    params: type[BaseModel] = NoParams
    """The pydantic model of its recipe params (subclass ``dissectkit.plugin.Params``)."""
    description: str = ""
    """One line, shown by ``dissectkit list``."""
    licence: str | None = None
    """The licence of its weights or data (shown by ``dissectkit list``, kept in ``manifest.json``)."""
    has_masks: bool | MasksWhen = False
    """Probes: whether items carry per-concept masks (``MasksWhen`` when it depends on the params)."""
    layers: Callable[[Any, BuildContext], list[LayerInfo]] | None = None
    """Targets: ``layers(params, ctx)``, the layers without loading weights (``validate``, ``layers``)."""
    missing_weights: Callable[[Any, BuildContext], list[str]] | None = None
    """Dissectors and targets: ``missing_weights(params, ctx)``, a line per weights file not on this
    machine that is not a weights ref in its params (pretrained tags and the like)."""
    distribution: str = "unknown"
    """The distribution that registered it (set by the host)."""
    plugin: str = ""
    """The plugin (entry point, or ``builtin:<name>``) that registered it (set by the host)."""

    @property
    def origin(self) -> str:
        """Who registered it, for messages: ``distribution 'x' (plugin 'y')``."""
        return f"distribution '{self.distribution}'" + (f" (plugin '{self.plugin}')" if self.plugin else "")

    def probe_has_masks(self, params: Any) -> bool:
        """Whether this probe's items carry masks with these (validated) params."""
        return self.has_masks(params) if isinstance(self.has_masks, MasksWhen) else bool(self.has_masks)

    @property
    def masks(self) -> str:
        """``has_masks`` for listings: ``yes``, ``no`` or ``with <when>``."""
        if isinstance(self.has_masks, MasksWhen):
            return f"with {self.has_masks.when}"
        return "yes" if self.has_masks else "no"

    def build(self, params: BaseModel, ctx: Any) -> Any:
        """Call the factory and adapt the instance to its kind's base class. A plugin's factory
        failing with anything but a ``DissectkitError`` is reported as that plugin's fault
        (``PluginComponentError``, naming its distribution and the component; never "internal
        error"); a built-in factory's failure is dissectkit's own and passes as it is. The class of
        the instance is recorded, so a later exception in its code names the component
        (``dissectkit.host.blame``)."""
        try:
            instance = self.factory(params, ctx)
        except DissectkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - a third-party factory's bug is named, not hidden
            if self.distribution == BUILTIN_DISTRIBUTION:
                raise
            raise PluginComponentError(
                f"The factory of {self.kind} '{self.name}' from {self.origin} failed: "
                f"{type(exc).__name__}: {exc}. This is a bug or a missing requirement of that plugin, not of "
                f"dissectkit; report it to its authors, or disable it with "
                f"DISSECTKIT_DISABLE_PLUGINS={self.plugin or self.distribution}.", spec=self,
            ) from exc
        _BUILT.setdefault(type(instance), self)
        return adapt(self.kind, instance, where=f"{self.kind} '{self.name}' from {self.origin}")

    def validate(self, raw: dict[str, Any] | None, where: str = "") -> BaseModel:
        """Validate raw parameters with the component's model; errors name each field."""
        try:
            return self.params.model_validate(raw or {})
        except ValidationError as exc:
            raise ComponentError(format_validation_error(exc, f"{where or self.kind} '{self.name}' params")) from None


SPEC_FIELDS = tuple(f.name for f in fields(ComponentSpec) if f.name not in ("kind", "name", "factory", "distribution", "plugin"))
"""What a registration may give besides the name and the factory."""
KIND_FIELDS = {"has_masks": ("probe",), "layers": ("target",), "missing_weights": ("dissector", "target")}
"""Registration fields that apply to some kinds only."""
RETIRED_FIELDS = {"embed_dim": "the dissector's own `embed_dim` member is the one declaration"}
"""Fields that used to be accepted (ignored with a DeprecationWarning for one release)."""


class Registry:
    """Holds the component specs registered by every plugin.

    The host registers plugins one at a time inside :meth:`session`: a problem (a taken name, an
    unknown field, a probe registered by the dissector hook...) is then recorded as a problem of
    that plugin (all of them, not only the first) and the host drops everything the plugin added,
    so a failed plugin leaves nothing behind. Outside a session (a registry built by hand) the first
    problem raises ``PluginError``.
    """

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], ComponentSpec] = {}
        self.current_distribution = "unknown"
        self.current_plugin = ""
        self._session: _Session | None = None

    def add(self, kind: str, name: str, factory: Callable[..., Any], **fields: Any) -> ComponentSpec | None:
        """Register one component (the host's entry; plugins use their hook's ``register``)."""
        who = f"Plugin '{self.current_plugin or self.current_distribution}' (distribution '{self.current_distribution}')"
        problem = _field_problem(kind, name, fields, who)
        declared = getattr(factory, "has_masks", None) if isinstance(factory, type) else None
        if problem is None and isinstance(declared, bool | MasksWhen):  # a probe class's own declaration
            if "has_masks" in fields and fields["has_masks"] != declared:
                problem = (f"{who} declares has_masks of probe {name!r} twice, differently: on {factory.__name__} "
                           f"({declared!r}) and at registration ({fields['has_masks']!r}). Declare it once.")
            fields = {**fields, "has_masks": declared} if kind == "probe" else fields
        spec = None
        if problem is None:
            given = {k: v for k, v in fields.items() if k not in RETIRED_FIELDS}
            spec = ComponentSpec(kind, name, factory, **given, distribution=self.current_distribution,
                                 plugin=self.current_plugin)
            problem = self._problem(spec, who)
        if problem is not None:
            if self._session is None:
                raise PluginError(problem)
            self._session.problems.append(problem)
            return None
        assert spec is not None
        self._specs[(kind, name)] = spec
        if self._session is not None:
            self._session.added.append((kind, name))
        return spec

    def _problem(self, spec: ComponentSpec, who: str) -> str | None:
        if not isinstance(spec.name, str) or not spec.name:
            return f"{who} registered a {spec.kind} without a name (got {spec.name!r})."
        if not callable(spec.factory):
            hint = ""
            if isinstance(spec.factory, str) and spec.name in KINDS:
                hint = (f" The hook's `register` is bound to its kind: call register(name, factory, ...) without "
                        f"the kind, and register a {spec.name} in {HOOK_OF_KIND[spec.name]}.")
            return f"{who} registered {spec.kind} {spec.name!r} with a factory that is not callable.{hint}"
        other = _kind_of_class(spec.factory)
        if other is not None and other != spec.kind:
            return (f"{who} registered {spec.name!r} as a {spec.kind}, but its factory is a {other} class "
                    f"({spec.factory.__name__}). Register it in {HOOK_OF_KIND[other]}.")
        if not (isinstance(spec.params, type) and issubclass(spec.params, BaseModel)):
            return (f"{who} registered {spec.kind} {spec.name!r} with params={spec.params!r}; give a pydantic model "
                    "(subclass dissectkit.plugin.Params).")
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

    def problem(self, text: str) -> None:
        """Record a problem of the plugin being registered (raise outside a session)."""
        if self._session is None:
            raise PluginError(text)
        self._session.problems.append(text)

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

    def masked_probes(self) -> builtins.list[str]:
        """The probes whose registration declares masks, for hints (``name`` or ``name (with ...)``)."""
        return [s.name if s.masks == "yes" else f"{s.name} ({s.masks})" for s in self.list("probe") if s.masks != "no"]

    def names(self, kind: str) -> builtins.list[str]:
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


def _kind_of_class(factory: Any) -> str | None:
    """The kind whose base class ``factory`` subclasses, when it is such a class."""
    if not isinstance(factory, type):
        return None
    return next((kind for kind, base in BASES.items() if issubclass(factory, base)), None)


def _field_problem(kind: str, name: str, given: dict[str, Any], who: str) -> str | None:
    if kind not in KINDS:
        return f"{who} registered {name!r} with unknown kind {kind!r}; kinds are {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}"
    for key in given:
        if key in RETIRED_FIELDS:
            warnings.warn(f"{who}: registration field {key!r} of {kind} {name!r} is ignored: {RETIRED_FIELDS[key]}.",
                          DeprecationWarning, stacklevel=4)
            continue
        if key not in SPEC_FIELDS:
            return (f"{who} registered {kind} {name!r} with unknown field {key!r}.{did_you_mean(key, SPEC_FIELDS)} "
                    f"Registration fields: {', '.join(SPEC_FIELDS)} (docs/plugins.md, 'Registering components').")
        kinds = KIND_FIELDS.get(key)
        if kinds is not None and kind not in kinds:
            return (f"{who} registered {kind} {name!r} with {key!r}, a field of {' and '.join(k + 's' for k in kinds)} only. "
                    f"Register a {kinds[0]} in {HOOK_OF_KIND[kinds[0]]}.")
    return None


class Register:
    """The ``register`` a registration hook receives, bound to the hook's kind::

        register("my-clip", make_my_clip, params=MyClipParams, description="...", licence="...")

    Keyword fields: ``params``, ``description``, ``licence`` and, per kind, ``has_masks`` (probes),
    ``layers`` (targets), ``missing_weights`` (dissectors, targets). Returns the spec (``None``
    when the registration is refused; the plugin then fails to load, every problem listed)."""

    def __init__(self, registry: Registry, kind: str) -> None:
        self.registry = registry
        self.kind = kind

    def __call__(self, name: str, factory: Callable[..., Any], **fields: Any) -> ComponentSpec | None:
        return self.registry.add(self.kind, name, factory, **fields)


class LegacyRegistry(Register):
    """What a registration hook written for ``registry.add(kind, name, ...)`` receives (deprecated):
    ``add`` accepts only the hook's own kind."""

    def add(self, kind: str, name: str, factory: Callable[..., Any], **fields: Any) -> ComponentSpec | None:
        if kind != self.kind and kind in KINDS:
            who = f"Plugin '{self.registry.current_plugin or self.registry.current_distribution}'"
            self.registry.problem(
                f"{who}: {HOOK_OF_KIND[self.kind]} registered the {kind} {name!r}; a hook registers its own kind only. "
                f"Move it to {HOOK_OF_KIND[kind]} (and use its `register` argument: register({name!r}, factory, ...))."
            )
            return None
        return self.registry.add(kind, name, factory, **fields)


@dataclass
class _Session:
    """What one plugin registered, and what went wrong, while the host registers it."""

    added: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ComponentError(f"Unknown component kind {kind!r}; kinds are {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
