"""Who raised it: an exception that escaped a plugin's code is the plugin's, not dissectkit's.

The components a run builds are known (``ComponentSpec.build`` records the class of each instance
it returns, and wraps a plugin factory's failure in ``PluginComponentError``); the plugins' modules
are known (the host's records). :func:`blame` walks an exception's traceback from the innermost
frame outwards and returns the first plugin whose code it passes through, with the component (kind
and name) that code belongs to when it can tell. The CLI uses it to name the plugin, its
distribution and version (exit 1, the traceback in a log file) instead of calling the failure an
internal error of dissectkit; the engine uses it to skip a probe item whose plugin raised.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from dissectkit.base.errors import DataError, PluginComponentError
from dissectkit.host.manager import PluginRecord, get_host
from dissectkit.host.registry import BUILTIN_DISTRIBUTION, ComponentSpec, built_spec


@dataclass
class Blame:
    """The plugin an exception came from."""

    plugin: str
    distribution: str
    version: str
    component: str | None
    """``probe 'bad-probe'``, when the code belongs to a component the run built."""
    where: str
    """The function and line that raised (``module.Class.method (file:line)``)."""

    @property
    def who(self) -> str:
        return (f"{self.component + ' from ' if self.component else ''}plugin '{self.plugin}' "
                f"(distribution '{self.distribution}' {self.version})")

    def message(self, exc: BaseException, log_file: str | None = None) -> str:
        """The CLI's error: who raised what where, whose problem it is and what to do."""
        cause = exc.__cause__ if isinstance(exc, PluginComponentError) and exc.__cause__ is not None else exc
        trace = f" with the traceback in {log_file}" if log_file else ""
        return (f"{self.who} raised {type(cause).__name__}: {cause} in {self.where}. This is a problem of that "
                f"plugin, not of dissectkit: report it to its authors{trace}, or run without it "
                f"(DISSECTKIT_DISABLE_PLUGINS={self.plugin}).")


def _top(module: str) -> str:
    return module.split(":", 1)[0].split(".", 1)[0]


def _record_of_module(module: str, records: list[PluginRecord]) -> PluginRecord | None:
    top = _top(module)
    if not top or top == "dissectkit":
        return None
    return next((r for r in records if r.distribution != BUILTIN_DISTRIBUTION and _top(r.module) == top), None)


def _record_of_spec(spec: ComponentSpec, records: list[PluginRecord]) -> PluginRecord | None:
    return next((r for r in records if r.name == spec.plugin and r.distribution == spec.distribution), None)


def _spec_of_frame(frame: Any, specs: list[ComponentSpec]) -> ComponentSpec | None:
    """The component a frame's code belongs to: its ``self`` was built by a spec, or it is a factory."""
    obj = frame.f_locals.get("self")
    if obj is not None:
        spec = built_spec(type(obj))
        if spec is not None:
            return spec if spec.distribution != BUILTIN_DISTRIBUTION else None
    code = frame.f_code
    return next((s for s in specs if getattr(s.factory, "__code__", None) is code
                 or (isinstance(s.factory, type) and obj is not None and isinstance(obj, s.factory))), None)


def _where(frame: Any, line: int) -> str:
    code = frame.f_code
    return f"{frame.f_globals.get('__name__', '?')}.{getattr(code, 'co_qualname', code.co_name)} ({code.co_filename}:{line})"


def blame(exc: BaseException) -> Blame | None:
    """The plugin whose code raised ``exc`` (or that its traceback passes through), or ``None``."""
    host = get_host()
    records = list(host.records)
    specs = [s for s in host.registry.list() if s.distribution != BUILTIN_DISTRIBUTION]
    if isinstance(exc, PluginComponentError) and isinstance(exc.spec, ComponentSpec):
        spec = exc.spec
        record = _record_of_spec(spec, records)
        inner = blame(exc.__cause__) if exc.__cause__ is not None else None
        return Blame(spec.plugin or spec.distribution, spec.distribution, record.version if record else "?",
                     f"{spec.kind} '{spec.name}' (its factory)", inner.where if inner else "its factory")
    frames = list(traceback.walk_tb(exc.__traceback__))
    for i in range(len(frames) - 1, -1, -1):
        frame, line = frames[i]
        spec = _spec_of_frame(frame, specs)
        record = _record_of_spec(spec, records) if spec is not None else None
        record = record or _record_of_module(frame.f_globals.get("__name__", ""), records)
        if record is None:
            continue
        if spec is None:  # the innermost component of that plugin further out
            outer = (_spec_of_frame(f, specs) for f, _ in reversed(frames[:i]))
            spec = next((s for s in outer if s is not None and s.distribution == record.distribution), None)
        component = f"{spec.kind} '{spec.name}'" if spec is not None else None
        return Blame(record.name, record.distribution, record.version, component, _where(frame, line))
    return None


def skip_reason(exc: BaseException) -> str | None:
    """Why a probe item is skipped: a ``DataError``'s message, or a plugin probe's exception named;
    ``None`` (raise it) for anything else."""
    if isinstance(exc, DataError):
        return str(exc)
    found = blame(exc)
    if found is None or found.component is None or not found.component.startswith("probe "):
        return None
    return f"{found.who} raised {type(exc).__name__}: {exc} in {found.where}"


def traceback_text(exc: BaseException) -> str:
    """The whole traceback, chained causes included."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
