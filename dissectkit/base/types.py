"""Plain data types shared by the host and every component."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Concept:
    """One candidate label, with its optional clinical category and sub-category, and its synonym
    ``group`` (the name of the group it belongs to, docs/methods.md "Concept groups"; ``None``: none)."""

    text: str
    category: str | None = None
    subcategory: str | None = None
    group: str | None = None


@dataclass
class ProbeItem:
    """One probe image as read from disk, before any model's preprocessing.

    ``image`` is a PIL image or an ``HxW`` / ``HxWxC`` numpy array (uint8, uint16 or float);
    16-bit data stays 16-bit here. ``masks`` maps a concept text to a boolean ``HxW`` array.
    """

    image: Any
    id: str
    labels: dict[str, Any] | None = None
    masks: dict[str, Any] | None = None
    report: str | None = None


@dataclass(frozen=True)
class LayerInfo:
    """A layer of a target: its name, neuron count, kind and output shape (without batch)."""

    name: str
    n_neurons: int
    kind: str = "conv"
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class MasksWhen:
    """A probe whose items carry masks for some parameters: ``test(params)`` says whether they do,
    ``when`` says when, for listings (e.g. ``MasksWhen("box_masks: true", lambda p: p.box_masks)``)."""

    when: str
    test: Callable[[Any], bool]

    def __call__(self, params: Any) -> bool:
        return bool(self.test(params))
