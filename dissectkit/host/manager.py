"""The plugin manager: built-ins, entry-point discovery (group ``dissectkit``), isolation of broken
plugins, ``DISSECTKIT_DISABLE_PLUGINS`` and misspelled hooks (docs/plugins.md, "Rules the host enforces")."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from dissectkit.base.errors import PluginError, did_you_mean
from dissectkit.host import hookspecs
from dissectkit.host.registry import BUILTIN_DISTRIBUTION, HOOK_OF_KIND, LegacyRegistry, Register, Registry

ENTRY_POINT_GROUP = "dissectkit"
DISABLE_ENV = "DISSECTKIT_DISABLE_PLUGINS"
DISABLED = f"disabled by {DISABLE_ENV}"
BUILTINS_ONLY_ENV = "DISSECTKIT_BUILTINS_ONLY"
"""Set to 1 to load the built-ins only, whatever is installed (test suites that must not see a
user's plugins; a plugin under test is added with ``Host.add_plugin``)."""
REGISTRATION_HOOKS = {hook: kind for kind, hook in HOOK_OF_KIND.items()}
"""Registration hook -> the kind its ``register`` is bound to."""
KNOWN_HOOKS = tuple(n for n in dir(hookspecs) if n.startswith("dissectkit_"))
BUILTIN_PLUGINS = {
    "probes": "dissectkit.builtin.probes",
    "concepts": "dissectkit.builtin.concepts",
    "targets": "dissectkit.builtin.targets",
    "dissectors": "dissectkit.builtin.dissectors",
    "similarities": "dissectkit.builtin.similarities",
    "methods": "dissectkit.builtin.methods",
    "reporters": "dissectkit.builtin.reporters",
    "synthetic": "dissectkit.synthetic.plugin",
}
"""The first-party plugin modules (``builtin:<name>``), imported by name and registered first."""


@dataclass
class PluginRecord:
    """What ``dissectkit plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    errors: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    disabled: bool = False
    warnings: list[str] = field(default_factory=list)
    """Deprecated uses that still work (shown by ``dissectkit plugins``)."""

    @property
    def ok(self) -> bool:
        return not self.errors and not self.disabled

    @property
    def error(self) -> str | None:
        """Every problem, one per line (``None`` when the plugin is fine)."""
        if self.disabled:
            return DISABLED
        return "\n".join(self.errors) if self.errors else None

    @property
    def aliases(self) -> set[str]:
        """The names ``DISSECTKIT_DISABLE_PLUGINS`` accepts for this plugin."""
        return {self.name, self.distribution, self.module, self.name.removeprefix("builtin:")}


class _Manager(pluggy.PluginManager):
    """Flags functions that look like hooks (``dissectkit_*``) but match no hookspec."""

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("dissectkit_") and callable(getattr(plugin, name, None)):
            raise PluginError(_hook_name_problem(name))
        return opts


def _hook_name_problem(name: str) -> str:
    if name in KNOWN_HOOKS:
        return f"Function {name!r} is not marked as a hook implementation; decorate it with @hookimpl."
    return f"Function {name!r} looks like a dissectkit hook but no such hook exists.{did_you_mean(name, KNOWN_HOOKS)}"


def _hook_problems(plugin: Any) -> list[str]:
    """Every misspelled or unmarked ``dissectkit_*`` function of a plugin (pluggy stops at the first)."""
    problems = []
    for name in sorted(n for n in dir(plugin) if n.startswith("dissectkit_")):
        obj = getattr(plugin, name, None)
        if not callable(obj) or inspect.isclass(obj):
            continue
        marked = hasattr(obj, f"{hookspecs.PROJECT}_impl")
        if marked and name not in KNOWN_HOOKS:
            problems.append(f"Unknown hook {name!r}.{did_you_mean(name, KNOWN_HOOKS)}")
        elif not marked:
            problems.append(_hook_name_problem(name))
    return problems


def installed_entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of group ``dissectkit``, sorted by distribution and name."""
    return sorted(
        metadata.entry_points(group=ENTRY_POINT_GROUP),
        key=lambda ep: (ep.dist.name if ep.dist is not None else "", ep.name),
    )


def disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {p.strip() for p in raw.split(",") if p.strip()}


class Host:
    """The plugin manager plus the registry it fills."""

    def __init__(self, strict: bool = False, entry_points: bool | None = None) -> None:
        self.strict = strict
        self.pm = _Manager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: list[PluginRecord] = []
        self._objects: dict[str, Any] = {}
        self._blocked = disabled_names()
        self._starting = True  # strict: the failures of the start are reported together below
        self._load_builtins()
        if entry_points is None:
            entry_points = os.environ.get(BUILTINS_ONLY_ENV, "0") in ("", "0")
        if entry_points:
            self._load_entry_points()
        self._starting = False
        if strict and self.failed:  # every failing plugin, not only the first
            raise PluginError("\n".join(
                f"Plugin '{r.name}' from '{r.distribution}' failed to load:\n  - " + "\n  - ".join(r.errors)
                for r in self.failed
            ) + "\n(--strict-plugins makes any failing plugin fatal.)")

    def _load_builtins(self) -> None:
        version = _version(BUILTIN_DISTRIBUTION)
        for name, modname in BUILTIN_PLUGINS.items():
            record = PluginRecord(f"builtin:{name}", BUILTIN_DISTRIBUTION, version, modname)
            self._add(record, lambda modname=modname: importlib.import_module(modname))

    def _load_entry_points(self) -> None:
        for ep in installed_entry_points():
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "?"
            self._add(PluginRecord(ep.name, dist, version, ep.value), ep.load)

    def _add(self, record: PluginRecord, load) -> None:
        self.records.append(record)
        if record.aliases & self._blocked:
            record.disabled = True
            return
        plugin = None
        try:
            plugin = load()
            record.errors.extend(_hook_problems(plugin))
            if not record.errors:
                self.pm.register(plugin, name=self._pm_name(record))
                self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never break the host
            record.errors.append(_describe(exc))
        if plugin is not None and not record.errors:
            self._register_components(record, plugin)
        if record.errors:
            if plugin is not None and self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            if self.strict and not self._starting:  # added later (add_plugin): fail at once
                raise PluginError(f"Plugin '{record.name}' from '{record.distribution}' failed to load:\n  - "
                                  + "\n  - ".join(record.errors))
            return
        self._objects[self._pm_name(record)] = plugin

    @staticmethod
    def _pm_name(record: PluginRecord) -> str:
        return f"{record.distribution}:{record.name}"

    def _register_components(self, record: PluginRecord, plugin: Any) -> None:
        """Call the plugin's registration hooks; on any problem roll back all it registered."""
        with self.registry.session(record.name, record.distribution) as session:
            for hook_name, kind in REGISTRATION_HOOKS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue
                    try:
                        impl.function(**self._registration_args(record, hook_name, kind, impl.argnames))
                    except Exception as exc:  # noqa: BLE001
                        session.problems.append(f"{hook_name} raised {_describe(exc)}")
        if session.problems:
            self.registry.discard(session.added)
            record.errors.extend(session.problems)
            record.errors.append("None of its components were registered.")
        else:
            record.components = sorted(f"{k}:{n}" for k, n in session.added)

    def _registration_args(self, record: PluginRecord, hook: str, kind: str, argnames: tuple[str, ...]) -> dict[str, Any]:
        """``register`` bound to the hook's kind; the former ``registry`` (restricted to that kind) with
        a deprecation warning."""
        args: dict[str, Any] = {}
        if "register" in argnames:
            args["register"] = Register(self.registry, kind)
        if "registry" in argnames:
            message = (f"Plugin '{record.name}' ({record.distribution}): {hook}(registry) is deprecated; take "
                       f"`register` instead and call register(name, factory, ...) (docs/plugins.md). "
                       f"`registry.add(kind, ...)` works for one more release.")
            record.warnings.append(message)
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            args["registry"] = LegacyRegistry(self.registry, kind)
        return args

    def add_plugin(self, plugin: Any, name: str | None = None, distribution: str = "in-process") -> PluginRecord:
        """Register a plugin object or module without installing it (``dissectkit.testing``)."""
        for record in self.records:  # installed too: its entry point registered it already
            if self._objects.get(self._pm_name(record)) is plugin and record.ok:
                return record
        name = name or getattr(plugin, "__name__", type(plugin).__name__)
        if any(r.name == name and r.distribution == distribution for r in self.records):
            raise PluginError(f"A plugin named '{name}' from '{distribution}' is already registered.")
        record = PluginRecord(name, distribution, "dev", getattr(plugin, "__name__", repr(plugin)))
        self._add(record, lambda: plugin)
        return record

    def remove_plugin(self, record: PluginRecord) -> None:
        """Undo :meth:`add_plugin`: its components and hooks go away."""
        self.registry.discard(tuple(c.split(":", 1)) for c in record.components)
        plugin = self._objects.pop(self._pm_name(record), None)
        if plugin is not None and self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
        self.records.remove(record)

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records if r.errors]

    @property
    def unmatched_disabled(self) -> list[str]:
        """Names in ``DISSECTKIT_DISABLE_PLUGINS`` that match no plugin or distribution."""
        known = set().union(*(r.aliases for r in self.records)) if self.records else set()
        return sorted(self._blocked - known)

    def disable_hint(self) -> str | None:
        """A warning for each unmatched ``DISSECTKIT_DISABLE_PLUGINS`` name, or ``None``."""
        unmatched = self.unmatched_disabled
        if not unmatched:
            return None
        names = sorted({r.name for r in self.records} | {r.distribution for r in self.records})
        parts = [f"'{n}'{did_you_mean(n, names)}" for n in unmatched]
        return f"{DISABLE_ENV} names no plugin or distribution: {', '.join(parts)} (`dissectkit plugins` lists them)."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PluginError):
        return str(exc)
    if isinstance(exc, pluggy.PluginValidationError):
        m = re.search(r"unknown hook '([^']+)'", str(exc))
        if m:
            return f"Unknown hook {m.group(1)!r}.{did_you_mean(m.group(1), KNOWN_HOOKS)}"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "dev"


_HOST: Host | None = None


def get_host(strict: bool = False, reload: bool = False) -> Host:
    """The process-wide host (built once; ``reload=True`` rediscovers entry points)."""
    global _HOST
    if _HOST is None or reload or (strict and not _HOST.strict):
        _HOST = Host(strict=strict)
    return _HOST
