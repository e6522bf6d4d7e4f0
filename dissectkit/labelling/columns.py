"""Per-neuron columns: what is measured about every labelled neuron besides its label.

After a method labels a layer, the engine computes each :class:`ColumnGroup`
(:func:`dissectkit.labelling.column_groups.groups`) on the same evidence (``LabelContext``) and keeps the values in ``LabelSet.columns[layer][name]`` (one
per neuron, ``None`` where undefined). Tables, the HTML cards and ``dissectkit compare`` read them
by their :class:`Column` descriptions, so a group adds its columns everywhere at once. The built-in
group is label quality (:mod:`dissectkit.labelling.quality`); docs/methods.md describes each column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from dissectkit.base.types import Concept
    from dissectkit.labelling.evidence import Evidence, LayerLabels


@dataclass(frozen=True)
class Column:
    """One per-neuron value: its ``name`` (a table column), what it means, its kind, and which way is
    better (``None``: not a score to rank by)."""

    name: str
    description: str
    kind: Literal["float", "bool", "int", "str"] = "float"
    better: Literal["higher", "lower"] | None = None


@dataclass
class LabelContext:
    """One labelled layer as a column group sees it: the method's labels and the evidence it labelled
    (activations of the valid images as row blocks, image embeddings of the same rows, the cached
    text encoder, spatial maps when the probe has masks), with the method and the known truth."""

    layer: str
    labels: LayerLabels
    evidence: Evidence
    concepts: list[Concept]
    method: Any = None
    truth: list[str | None] | None = None
    device: str | None = None

    @property
    def n_neurons(self) -> int:
        return len(self.labels.neurons)

    def activation_blocks(self) -> Iterator[torch.Tensor]:
        """The activations as float32 ``[n_i, K]`` row blocks in probe order (a fresh pass)."""
        return self.evidence.iter_activations()


class ColumnGroup(Protocol):
    """Columns computed together (one pass over the evidence). A recipe turns a group off or sets its
    params under ``output.columns.<name>`` (``false``, or a mapping validated by ``params``)."""

    name: str
    columns: tuple[Column, ...]
    params: type[BaseModel]
    """The group's settings (a ``dissectkit.plugin.Params`` model; ``NoParams`` when it has none)."""

    def compute(self, ctx: LabelContext, params: Any) -> dict[str, list[Any]]:
        """``{column name: one value per neuron}`` (``None`` where undefined; a column left out is all ``None``)."""
        ...
