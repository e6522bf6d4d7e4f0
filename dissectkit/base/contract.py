"""Protocols of the seven component kinds (what the engine relies on), their optional members
with defaults, and the one function per rule that reads each optional member.

A protocol lists the required members only (``isinstance(obj, Probe)`` checks them). The optional
members are declared, with their defaults, on a ``*Defaults`` class: subclass it to inherit them, or
define the member yourself. The host never probes a component with ``getattr`` elsewhere: it calls
the reader of that member below (``probe_ids``, ``probe_has_masks``, ``target_ground_truth``...).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dissectkit.base.types import Concept, LayerInfo, ProbeItem
from dissectkit.labelling.evidence import Method as Method  # the Method protocol lives with Evidence
from dissectkit.labelling.evidence import MethodBase

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dissectkit.results.cards import CardRequest
    from dissectkit.results.run_result import RunResult


# --------------------------------------------------------------------------- required members
@runtime_checkable
class Dissector(Protocol):
    """A vision-language model; both encoders return L2-normalised rows."""

    embed_dim: int

    def preprocess(self, image: Any) -> torch.Tensor: ...
    def encode_images(self, images: torch.Tensor) -> torch.Tensor: ...
    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...
    def fingerprint(self) -> str: ...


@runtime_checkable
class Target(Protocol):
    """The model under study; ``module`` is in eval mode; ``layers()`` works without images."""

    module: nn.Module

    def preprocess(self, image: Any) -> torch.Tensor: ...
    def layers(self) -> list[LayerInfo]: ...
    def fingerprint(self) -> str: ...


@runtime_checkable
class Probe(Protocol):
    """Probe images, read lazily; ``fingerprint()`` changes with the files and their order."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> ProbeItem: ...
    def fingerprint(self) -> str: ...


@runtime_checkable
class ConceptSet(Protocol):
    """Candidate labels (``Concept`` with optional category / sub-category)."""

    @property
    def concepts(self) -> list[Concept]: ...


@runtime_checkable
class Similarity(Protocol):
    """``sim(P[N, C], A[N, K]) -> Tensor[K, C]``, higher = better."""

    def __call__(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Reporter(Protocol):
    """Writes files about a finished run into ``out_dir`` (see ``docs/plugins.md``)."""

    def write(self, run_result: RunResult, out_dir: Path) -> None: ...


# --------------------------------------------------------------------------- optional members
class DissectorDefaults:
    """Optional dissector members. ``input_size``: the side of its square input (metadata only);
    ``to(device)``: move the model (the default keeps it where it is)."""

    input_size: int | None = None

    def to(self, device: str) -> Any:
        return self


class TargetDefaults:
    """Optional target members. ``ground_truth(layer)``: the true concept of each neuron of a layer
    when known (the run then measures accuracy); ``preprocess_mask(mask)``: put an ``H x W`` concept
    mask through the same resize / crop as ``preprocess`` (``None``: masks are used as they are)."""

    def ground_truth(self, layer: str) -> list[str | None] | None:
        return None

    preprocess_mask: Callable[[Any], Any] | None = None


class ProbeDefaults:
    """Optional probe members. ``ids()``: every item's unique, file-true id in order
    (``ids()[i] == probe[i].id``), built once and cached, so the engine calls it once per run
    (default: the indices);
    ``has_masks``: items carry per-concept masks; ``skipped``: ``(id, reason)`` of files left out."""

    has_masks: bool = False
    skipped: list[tuple[str, str]] = []  # noqa: RUF012 - read-only default

    def ids(self) -> list[str]:
        return [str(i) for i in range(len(self))]  # type: ignore[arg-type]


class SimilarityDefaults:
    """Optional similarity member. ``from_embeddings(images[N, D], texts[C, D], A[N, K])``: scores
    without forming ``P = images @ texts.T`` at once (``None``: the host forms ``P``)."""

    from_embeddings: Callable[[Any, Any, Any], Any] | None = None


class ReporterDefaults:
    """Optional reporter member. ``card_request``: the top images it shows per neuron (a
    ``dissectkit.results.cards.CardRequest``); the single pass then keeps their thumbnails and heatmaps in
    ``run_result.evidence.cards``, so the reporter need not read those images again (``None``:
    nothing is kept)."""

    card_request: CardRequest | None = None


MethodDefaults = MethodBase
"""Optional method members (declared with :class:`dissectkit.labelling.evidence.MethodBase`, which the built-in
methods inherit): ``needs_masks``: it reads ``evidence.spatial_maps`` and needs a probe with masks;
``uses_dissector``: it reads the dissector's embeddings (``False``: run once per (target, layer))."""


# --------------------------------------------------------------------------- the readers
_MISSING = object()


def _member(obj: Any, defaults: type, name: str) -> Any:
    """The one place optional members are read: the object's own, else the declared default."""
    value = getattr(obj, name, _MISSING)
    return getattr(defaults, name) if value is _MISSING else value


def probe_ids(probe: Any) -> list[str]:
    """The id of every probe image, in order (``ids()`` may be a method or a list)."""
    ids = _member(probe, ProbeDefaults, "ids")
    if ids is ProbeDefaults.ids:
        return [str(i) for i in range(len(probe))]
    values = ids() if callable(ids) else ids
    return [str(v) for v in values]


def probe_has_masks(probe: Any) -> bool:
    return bool(_member(probe, ProbeDefaults, "has_masks"))


def probe_skipped(probe: Any) -> list[tuple[str, str]]:
    return list(_member(probe, ProbeDefaults, "skipped") or [])


def target_ground_truth(target: Any, layer: str) -> list[str | None] | None:
    fn = _member(target, TargetDefaults, "ground_truth")
    if fn is TargetDefaults.ground_truth:
        return None
    return fn(layer)


def target_mask_aligner(target: Any) -> Callable[[Any], Any] | None:
    fn = _member(target, TargetDefaults, "preprocess_mask")
    return fn if callable(fn) else None


def similarity_scores(sim: Any, images: Any, texts: Any, activations: Any) -> Any:
    """``[K, C]`` scores from embeddings: ``from_embeddings`` when offered, else ``sim(I @ T.T, A)``."""
    fn = _member(sim, SimilarityDefaults, "from_embeddings")
    if callable(fn):
        return fn(images, texts, activations)
    return sim(images @ texts.T, activations)


def method_needs_masks(method: Any) -> bool:
    return bool(_member(method, MethodDefaults, "needs_masks"))


def method_uses_dissector(method: Any) -> bool:
    return bool(_member(method, MethodDefaults, "uses_dissector"))


def reporter_card_request(reporter: Any) -> CardRequest | None:
    return _member(reporter, ReporterDefaults, "card_request")


def dissector_input_size(dissector: Any) -> int | None:
    return _member(dissector, DissectorDefaults, "input_size")


def move_to(component: Any, device: str) -> Any:
    """``component.to(device)`` when it offers it (dissectors, targets); returns what to use."""
    fn = _member(component, DissectorDefaults, "to")
    if fn is DissectorDefaults.to:
        return component
    moved = fn(device)
    return component if moved is None else moved


def mask_probe_names() -> list[str]:
    """The registered probes that declare ``has_masks=True`` in their metadata (for hints)."""
    from dissectkit.host.manager import get_host

    return [s.name for s in get_host().registry.list("probe") if s.metadata.get("has_masks")]


def check_masks_available(method_label: str, method: Any, probe_label: str, probe: Any) -> None:
    """A method that needs masks with a probe that has none: an ``EvidenceError`` before any work."""
    from dissectkit.base.errors import EvidenceError

    if probe is None or not method_needs_masks(method) or probe_has_masks(probe):
        return
    names = ", ".join(mask_probe_names()) or "(none installed)"
    raise EvidenceError(
        f"Method '{method_label}' needs a probe with per-concept masks, but probe '{probe_label}' has none. "
        f"Use a probe with masks ({names}, or csv with a mask column) or another method."
    )
