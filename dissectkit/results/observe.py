"""Pass observers: what a reporter may watch of the run's single cached pass (docs/reports.md, "What
a reporter may ask of the engine")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dissectkit.base.types import LayerInfo


@dataclass(frozen=True)
class PassPlan:
    """What the pass hooks: ``layers[target label]`` (every layer of the run) over ``n_images`` images."""

    layers: dict[str, list[LayerInfo]]
    n_images: int


class Observation(Protocol):
    """What an observer produces; kept in the cache as the bytes of one file."""

    def to_bytes(self) -> bytes: ...


class PassObserver(Protocol):
    """Watches the single pass for one reporter."""

    key: Any
    """JSON-able: what the observation depends on besides the activation entries (the cache key)."""

    def item_function(self) -> Callable[[Any], Any] | None:
        """A picklable function of a probe item run in the data workers (e.g. a thumbnail); its
        values come to :meth:`batch_finished` (``None`` where it raised). ``None``: no such value."""

    def chunk_started(self, layers: dict[str, list[str]]) -> None:
        """A chunk begins whose pass hooks ``layers[target]`` (the others come from the cache)."""

    def batch_started(self, rows: list[int]) -> None:
        """The probe indices of the valid images of the batch about to run through the targets."""

    def layer_output(self, target: str, layer: str, pooled: Any, output: Any) -> None:
        """At a hooked layer: ``pooled`` ``[B, K]`` (the values cached) and the raw ``output``."""

    def batch_finished(self, rows: list[int], values: list[Any]) -> None:
        """After the batch: every probe index and the item function's value for it (``None`` if none)."""

    def result(self) -> Observation | None:
        """What was observed (``None``: nothing)."""

    def complete(self, total_chunks: int) -> bool:
        """Whether it saw everything it needs of all ``total_chunks`` chunks (then it is cached)."""

    def load(self, path: Path) -> Observation:
        """Read a cached observation (raises when it cannot be read)."""
