"""What the engine asks of reporters besides ``write``: their pass observers
(:mod:`dissectkit.results.observe`), kept in the cache, and the pages they write."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dissectkit.engine.cache import Cache, content_key, usable, write_checked
from dissectkit.engine.distributed import World
from dissectkit.engine.resolve import Resolved
from dissectkit.results.observe import PassObserver, PassPlan

if TYPE_CHECKING:
    from dissectkit.engine.extract import Extraction
    from dissectkit.results.run_result import RunResult

log = logging.getLogger(__name__)


def reporter_pages(res: Resolved, result: RunResult) -> dict[str, str]:
    """Title -> path (relative to the run directory) of the pages the reporters write, so each
    may link the others' (``pages(run_result)``)."""
    pages: dict[str, str] = {}
    for reporter in res.reporters.values():
        pages.update(reporter.pages(result))
    return pages


class Watch:
    """The run's pass observers behind one object (with none, every call does nothing)."""

    def __init__(self, observers: dict[str, PassObserver] | None = None) -> None:
        self.observers = observers or {}
        self.functions = {label: fn for label, o in self.observers.items() if (fn := o.item_function()) is not None}

    @classmethod
    def for_run(cls, res: Resolved, world: World) -> Watch:
        """The observers the reporters offer (``pass_observer(plan)``), on the main process only."""
        plan = PassPlan({t: slot.layers for t, slot in res.targets.items()}, len(res.probe))
        reporters = res.reporters if world.is_main else {}
        return cls({label: o for label, r in reporters.items() if (o := r.pass_observer(plan)) is not None})

    def chunk_started(self, layers: dict[str, list[str]]) -> None:
        for o in self.observers.values():
            o.chunk_started(layers)

    def batch_started(self, rows: list[int]) -> None:
        for o in self.observers.values():
            o.batch_started(rows)

    def layer_output(self, target: str, layer: str, pooled: Any, output: Any) -> None:
        for o in self.observers.values():
            o.layer_output(target, layer, pooled, output)

    def batch_finished(self, rows: list[int], values: list[dict[str, Any]]) -> None:
        for label, o in self.observers.items():
            o.batch_finished(rows, [v.get(label) for v in values])

    def settle(self, cache: Cache, ex: Extraction) -> dict[str, Any]:
        """Each observer's observation: a complete one is kept in the cache; else the one a complete
        earlier pass over the same activation entries kept, when it can be read; else what was seen.
        An observation with a ``keep`` attribute is given a function writing bytes back to its cache
        file, so its reporter may complete it for the next run (the ``html`` reporter adds the
        thumbnails and maps it had to compute)."""
        acts = sorted(e.root.name for e in ex.acts.values())
        kept = {}
        for label, observer in self.observers.items():
            path = cache.root / "observed" / content_key("observed", acts, observer.key) / "observation"
            observation = observer.result()
            if observation is not None and observer.complete(ex.total_chunks):
                _keep(path, label, observation.to_bytes())
            elif usable(path):  # verified; a damaged file is moved aside (warned) and computed again
                try:
                    observation = observer.load(path)
                except Exception as exc:  # noqa: BLE001 - a damaged file is only a lost head start
                    log.warning("Ignoring the cached observation %s of reporter '%s' (%s): it is computed again.", path, label, exc)
            if observation is not None:
                if hasattr(observation, "keep"):
                    observation.keep = partial(_keep, path, label)
                kept[label] = observation
        return kept


def _keep(path: Path, label: str, data: bytes) -> None:
    try:
        write_checked(path, data)
    except OSError as exc:  # a full or read-only cache only costs the next run its head start
        log.warning("Could not keep what reporter '%s' observed in the cache (%s): %s", label, path, exc)


def item_values(functions: dict[str, Callable[[Any], Any]], item: Any) -> dict[str, Any]:
    """The observers' item functions on one probe item (in a data worker; ``None`` where one raises)."""
    values = {}
    for label, fn in functions.items():
        try:
            values[label] = fn(item)
        except Exception:  # noqa: BLE001 - optional: the reporter computes it again
            values[label] = None
    return values
