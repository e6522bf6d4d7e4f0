"""Public types of the labelling methods: the evidence a method reads and the labels it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dissectkit.types import Concept

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["Evidence", "LayerLabels", "SpatialBatch", "Method", "concept_list"]


@dataclass
class SpatialBatch:
    """A batch of unpooled activation maps ``[B, K, h, w]`` with the probe's masks of those images.

    ``masks[b]`` maps concept text -> boolean ``H x W`` array (or is ``None`` when the image has none).
    """

    maps: torch.Tensor
    masks: list[dict[str, np.ndarray] | None]


def concept_list(concepts: Any) -> list[Concept]:
    """Normalise a list of strings, a list of ``Concept`` or a ConceptSet into ``list[Concept]``."""
    items = getattr(concepts, "concepts", concepts)
    out = []
    for c in items:
        out.append(c if isinstance(c, Concept) else Concept(str(c)))
    return out


@dataclass
class Evidence:
    """Everything a method may use to label the neurons of one layer.

    ``activations`` is ``[N, K]`` (N probe images, K neurons), ``image_embeddings`` is ``[N, D]``
    (L2-normalised dissector embeddings of the same images, same order). ``encode_texts`` maps
    strings to L2-normalised ``[n, D]`` text embeddings (cached by the engine).
    ``spatial_maps``, when given, is a zero-argument callable that returns a fresh iterator of
    ``SpatialBatch`` over the probe set (mask-based methods iterate it more than once).
    """

    layer: str
    activations: torch.Tensor
    image_embeddings: torch.Tensor
    concepts: list[str] | Any
    encode_texts: Callable[[list[str]], torch.Tensor]
    spatial_maps: Callable[[], Iterator[SpatialBatch]] | None = None
    seed: int = 0
    device: str | None = None

    @property
    def concept_objects(self) -> list[Concept]:
        """The concepts as ``Concept`` objects (text, category, subcategory)."""
        return concept_list(self.concepts)

    @property
    def concept_texts(self) -> list[str]:
        """The concept strings, in order."""
        return [c.text for c in self.concept_objects]

    @property
    def has_masks(self) -> bool:
        return self.spatial_maps is not None


@dataclass
class LayerLabels:
    """Per-neuron ranked ``(concept, score)`` lists for one layer (an empty list = no concept)."""

    layer: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    neurons: list[list[tuple[str, float]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.neurons)

    def label(self, unit: int) -> str | None:
        """The top-1 concept of a neuron, or ``None`` when it has none."""
        ranked = self.neurons[unit]
        return ranked[0][0] if ranked else None

    def score(self, unit: int) -> float | None:
        ranked = self.neurons[unit]
        return ranked[0][1] if ranked else None

    def top1(self) -> list[str | None]:
        return [self.label(k) for k in range(len(self.neurons))]

    def topk(self, k: int = 5) -> list[list[str]]:
        return [[c for c, _ in ranked[:k]] for ranked in self.neurons]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "method": self.method,
            "params": self.params,
            "neurons": [[[c, float(s)] for c, s in ranked] for ranked in self.neurons],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerLabels:
        return cls(
            layer=data["layer"],
            method=data["method"],
            params=dict(data.get("params", {})),
            neurons=[[(str(c), float(s)) for c, s in ranked] for ranked in data["neurons"]],
        )


class Method(Protocol):
    """A labelling strategy. ``needs_masks`` methods require ``evidence.spatial_maps``."""

    name: str
    needs_masks: bool

    def label(self, evidence: Evidence) -> LayerLabels: ...

