"""Protocols of the seven component kinds (what the engine relies on)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dissectkit.methods import Method as Method  # the Method protocol lives with Evidence
from dissectkit.types import Concept, LayerInfo, ProbeItem

if TYPE_CHECKING:
    import torch
    from torch import nn


@runtime_checkable
class Dissector(Protocol):
    """A vision-language model. Optional: ``to(device)`` (the engine moves it) and
    ``input_size`` metadata."""

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
    """Probe images. Optional: ``has_masks: bool``, ``skipped: list[tuple[str, str]]`` (id, reason) and
    ``ids() -> list[str]``: every item's unique, file-true id in order (``ids()[i] == probe[i].id``),
    built once and cached so a caller may call it once per run; without it, ids are the indices."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> ProbeItem: ...
    def fingerprint(self) -> str: ...


@runtime_checkable
class ConceptSet(Protocol):
    @property
    def concepts(self) -> list[Concept]: ...


class Similarity(Protocol):
    def __call__(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor: ...


class Reporter(Protocol):
    def write(self, run_result: Any, out_dir: Path) -> None: ...
