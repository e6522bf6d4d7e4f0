"""The plugin manager: built-ins, entry-point discovery (group ``dissectkit``), isolation of
broken plugins, blocking by ``DISSECTKIT_DISABLE_PLUGINS`` and detection of misspelled hooks."""

from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from dissectkit import hookspecs
from dissectkit.errors import PluginError, did_you_mean
from dissectkit.registry import Registry

ENTRY_POINT_GROUP = "dissectkit"
BUILTIN_DISTRIBUTION = "dissectkit"
REGISTRATION_HOOKS = (
    "dissectkit_register_dissectors",
    "dissectkit_register_targets",
    "dissectkit_register_probes",
    "dissectkit_register_concept_sets",
    "dissectkit_register_similarities",
    "dissectkit_register_methods",
    "dissectkit_register_reporters",
)
KNOWN_HOOKS = tuple(n for n in dir(hookspecs) if n.startswith("dissectkit_"))


@dataclass
class PluginRecord:
    """What ``dissectkit plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None
    components: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Manager(pluggy.PluginManager):
    """Flags functions that look like hooks (``dissectkit_*``) but match no hookspec."""

    def parse_hookimpl_opts(self, plugin: Any, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("dissectkit_") and callable(getattr(plugin, name, None)):
            if name in KNOWN_HOOKS:
                raise PluginError(f"Function {name!r} is not marked as a hook implementation; decorate it with @hookimpl.")
            raise PluginError(
                f"Function {name!r} looks like a dissectkit hook but no such hook exists.{did_you_mean(name, KNOWN_HOOKS)}"
            )
        return opts


def disabled_names() -> set[str]:
    raw = os.environ.get("DISSECTKIT_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


class Host:
    """The plugin manager plus the registry it fills."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.pm = _Manager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: list[PluginRecord] = []
        self._dist_of: dict[int, str] = {}
        self._load_builtins()
        self._load_entry_points()
        self._register_components()

    # -- loading ---------------------------------------------------------------------------
    def _load_builtins(self) -> None:
        from dissectkit.builtin import BUILTIN_MODULES

        version = _version(BUILTIN_DISTRIBUTION)
        for modname in BUILTIN_MODULES:
            self._add(f"builtin:{modname.rsplit('.', 1)[-1]}", BUILTIN_DISTRIBUTION, version, modname)

    def _load_entry_points(self) -> None:
        blocked = disabled_names()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "?"
            if ep.name in blocked or dist in blocked:
                self.records.append(PluginRecord(ep.name, dist, version, ep.value, error="disabled by DISSECTKIT_DISABLE_PLUGINS"))
                continue
            self._add(ep.name, dist, version, ep.value, entry_point=ep)

    def _add(self, name: str, dist: str, version: str, target: str, entry_point=None) -> None:
        record = PluginRecord(name, dist, version, target)
        self.records.append(record)
        try:
            plugin = entry_point.load() if entry_point is not None else importlib.import_module(target)
            self.pm.register(plugin, name=f"{dist}:{name}")
            self.pm.check_pending()
            self._dist_of[id(plugin)] = dist
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never break the host
            plugin_obj = locals().get("plugin")
            if plugin_obj is not None and self.pm.is_registered(plugin_obj):
                self.pm.unregister(plugin_obj)
            record.error = _describe(exc)
            if self.strict:
                raise PluginError(f"Plugin '{name}' from '{dist}' failed to load: {record.error}") from exc

    def _register_components(self) -> None:
        for hook_name in REGISTRATION_HOOKS:
            caller = getattr(self.pm.hook, hook_name)
            for impl in reversed(caller.get_hookimpls()):
                dist = self._dist_of.get(id(impl.plugin), "unknown")
                record = self._record_for(impl.plugin_name)
                self.registry.current_distribution = dist
                before = {(s.kind, s.name) for s in self.registry.list()}
                try:
                    impl.function(registry=self.registry)
                except Exception as exc:  # noqa: BLE001
                    if record is not None:
                        record.error = _describe(exc)
                    if self.strict:
                        raise PluginError(f"Plugin '{impl.plugin_name}' failed to register: {_describe(exc)}") from exc
                after = {(s.kind, s.name) for s in self.registry.list()}
                if record is not None:
                    record.components.extend(f"{k}:{n}" for k, n in sorted(after - before))
        self.registry.current_distribution = "unknown"

    def _record_for(self, plugin_name: str) -> PluginRecord | None:
        for r in self.records:
            if f"{r.distribution}:{r.name}" == plugin_name:
                return r
        return None

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records if r.error and not r.error.startswith("disabled")]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PluginError):
        return str(exc)
    if isinstance(exc, pluggy.PluginValidationError):
        import re

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

