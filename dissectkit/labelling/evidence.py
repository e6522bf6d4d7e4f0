"""Public types of the labelling methods: the evidence a method reads and the labels it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dissectkit.base.errors import EvidenceError
from dissectkit.base.types import Concept

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "NO_CONCEPT_REASONS",
    "Evidence",
    "LayerLabels",
    "SpatialBatch",
    "concept_list",
]

#: Why a neuron has no concept: code (the value of ``LayerLabels.reasons[k]``) -> description.
NO_CONCEPT_REASONS: dict[str, str] = {
    "dead": "constant activation over every valid probe image (a dead neuron): nothing to label",
    "no_match": "no concept passes the method's rule (mammi: every summed score <= 0; "
    "netdissect: best IoU below min_iou)",
}


@dataclass
class SpatialBatch:
    """A batch of unpooled activation maps ``[B, K, h, w]`` with the probe's masks of those images.

    ``masks[b]`` maps concept text -> boolean ``H x W`` array (or is ``None`` when the image has none).
    """

    maps: torch.Tensor
    masks: list[dict[str, np.ndarray] | None]


def concept_list(concepts: Any) -> list[Concept]:
    """Normalise a list of strings, a list of ``Concept`` or a ConceptSet into ``list[Concept]``."""
    return [c if isinstance(c, Concept) else Concept(str(c)) for c in getattr(concepts, "concepts", concepts)]


@dataclass
class Evidence:
    """Everything a method may use to label the neurons of one layer.

    The activations of the N valid probe images come in one of two forms:

    - ``activations``: a materialised ``[N, K]`` tensor (N probe images, K neurons), or
    - ``activation_chunks``: a zero-argument callable returning a *fresh* iterator of float32 row
      blocks ``[n_i, K]`` that cover the N images in order (e.g. the cache's chunks, the skipped
      images already left out); ``activations`` may then be ``None``. Methods read the blocks in one
      or two streamed passes and never hold ``[N, K]``. When both are given the chunks are used.

    Read them with :meth:`iter_activations` (works for both forms). ``image_embeddings`` is
    ``[N, D]`` (L2-normalised dissector embeddings of the same images, same order; row i of the
    embeddings is row i of the activations). ``encode_texts`` maps strings to L2-normalised
    ``[n, D]`` text embeddings (cached by the engine). ``spatial_maps``, when given, is a
    zero-argument callable that returns a fresh iterator of ``SpatialBatch`` over the same images in
    the same order (mask-based methods iterate it more than once).
    """

    layer: str
    activations: torch.Tensor | None
    image_embeddings: torch.Tensor
    concepts: list[str] | Any
    encode_texts: Callable[[list[str]], torch.Tensor]
    spatial_maps: Callable[[], Iterator[SpatialBatch]] | None = None
    seed: int = 0
    device: str | None = None
    activation_chunks: Callable[[], Iterator[torch.Tensor]] | None = None
    image_index: torch.Tensor | None = None
    """The probe index of each row (``[N]`` int64), when known (the engine gives it): a method that
    keeps images (e.g. ``mammo-factor``'s top images per attribute) names them by it."""
    _n_neurons: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.activations is None and self.activation_chunks is None:
            raise EvidenceError(
                f"Evidence for layer {self.layer!r} has no activations: pass `activations` ([N, K] tensor) "
                "or `activation_chunks` (a callable returning an iterator of [n_i, K] blocks)."
            )

    def iter_activations(self) -> Iterator[torch.Tensor]:
        """The activations as float32 ``[n_i, K]`` row blocks in probe order (a fresh iterator)."""
        import torch

        if self.activation_chunks is not None:
            for block in self.activation_chunks():
                yield torch.as_tensor(block).to(torch.float32)
            return
        from dissectkit.labelling.streaming import tensor_blocks

        A = torch.as_tensor(self.activations)
        if A.ndim != 2:
            raise EvidenceError(
                f"Layer {self.layer!r}: activations must be [images, neurons], got shape {tuple(A.shape)}."
            )
        for block in tensor_blocks(A):
            yield block.to(torch.float32)

    @property
    def n_images(self) -> int:
        """N, the number of valid probe images (rows of ``image_embeddings``)."""
        return int(self.image_embeddings.shape[0])

    @property
    def n_neurons(self) -> int:
        """K, the number of neurons of the layer (reads the first block when only chunks are given)."""
        if self._n_neurons is None:
            if self.activation_chunks is None and self.activations is not None:
                self._n_neurons = int(self.activations.shape[-1])
            else:
                for block in self.iter_activations():
                    self._n_neurons = int(block.shape[1])
                    break
        if self._n_neurons is None:
            raise EvidenceError(f"Layer {self.layer!r}: the activation chunks are empty.")
        return self._n_neurons

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
    """Per-neuron ranked ``(concept, score)`` lists for one layer (an empty list = no concept).

    ``reasons`` says why a neuron has no concept: neuron index -> a code of
    :data:`NO_CONCEPT_REASONS` (``"dead"``: constant activation over the valid probe images;
    ``"no_match"``: nothing passes the method's rule). Neurons with a concept have no entry, except a
    constant neuron that a method labels anyway (``precision: published``: the published code labels
    it), which keeps ``"dead"`` so it is still known to be constant.

    ``tolerance`` (optional) is the rounding tolerance of the method's scores: two correct float
    evaluations of one score may differ by up to this much, so a top-1 / top-2 margin at or below
    it is a coin toss (the ``margins`` column group). ``runner_up`` (optional) holds, for neurons
    whose ranked list has fewer than two concepts, the second-best score over every concept.
    ``extra`` holds method-specific findings (plain data).
    """

    layer: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    neurons: list[list[tuple[str, float]]] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    tolerance: float | None = None
    runner_up: dict[int, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """What else the method found, as plain JSON data (e.g. ``mammo-factor``'s attributes: their
    channels and heatmaps); written to ``labels.json`` only when not empty."""

    def __len__(self) -> int:
        return len(self.neurons)

    def label(self, unit: int) -> str | None:
        """The top-1 concept of a neuron, or ``None`` when it has none."""
        ranked = self.neurons[unit]
        return ranked[0][0] if ranked else None

    def score(self, unit: int) -> float | None:
        ranked = self.neurons[unit]
        return ranked[0][1] if ranked else None

    def reason(self, unit: int) -> str | None:
        """Why the neuron has no concept (a :data:`NO_CONCEPT_REASONS` code), or ``None``."""
        return self.reasons.get(unit)

    @property
    def dead(self) -> list[int]:
        """The neurons whose activation is constant over the valid probe images."""
        return sorted(k for k, r in self.reasons.items() if r == "dead")

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
            "reasons": {str(k): self.reasons[k] for k in sorted(self.reasons)},
            **({"tolerance": float(self.tolerance)} if self.tolerance is not None else {}),
            **({"runner_up": {str(k): float(self.runner_up[k]) for k in sorted(self.runner_up)}} if self.runner_up else {}),
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerLabels:
        """Inverse of :meth:`to_dict`; files written before ``reasons`` (``tolerance``, ``runner_up``)
        existed load with none."""
        tolerance = data.get("tolerance")
        return cls(
            layer=data["layer"],
            method=data["method"],
            params=dict(data.get("params", {})),
            neurons=[[(str(c), float(s)) for c, s in ranked] for ranked in data["neurons"]],
            reasons={int(k): str(v) for k, v in (data.get("reasons") or {}).items()},
            tolerance=None if tolerance is None else float(tolerance),
            runner_up={int(k): float(v) for k, v in (data.get("runner_up") or {}).items()},
            extra=dict(data.get("extra") or {}),
        )
