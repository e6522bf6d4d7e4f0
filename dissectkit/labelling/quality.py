"""Label quality without ground truth (docs/methods.md, "Label quality").

For a neuron labelled with concept ``c`` by some method, and the dissector's image-concept
similarity ``p_c = V t_c`` over the probe (``V``: L2-normalised image embeddings, ``t_c``: the
L2-normalised embedding of the bare concept text):

- ``sim_corr``: Spearman correlation over the probe between the neuron's activation and ``p_c``
  ("simulation": how well the label, read by the dissector, predicts the activation);
- ``top_auc``: AUC of ``p_c`` separating the neuron's top-activating images (the top
  ``top_fraction`` of the probe, at least one) from the other images;
- ``sim_z``: ``(sim_corr - mean) / sd`` where mean and sd are over the Spearman correlations of the
  same neuron with *every* concept of the set (population sd);
- ``interpretable``: ``sim_z >= Z_MIN`` and ``sim_corr > 0``.

Everything is vectorised: average ranks by sort + scatter, correlations as matmuls of
standardised ranks, over blocks of neurons and of concepts. The concepts' ranks (every concept's
similarity over the probe) depend on the dissector's embeddings only: they are formed once and
kept for the next layers and methods of the run (:data:`CONCEPT_RANK_BUDGET` values at most; past
it they are formed again for each block of neurons, so memory stays
``O(N * (NEURON_BLOCK + CONCEPT_BLOCK))`` whatever K and C). Each block of neurons is ranked once
and gives both the z-score reference and its labelled neurons' columns. Activations may be given as
:class:`ActivationColumns` over streamed row blocks (the engine's cached chunks): each block of
neuron columns is then gathered by one pass over the chunks, so a layer is never held whole
(Spearman needs every image of a neuron at once, so memory is ``O(N * block)``, the block
shrinking as N grows: ``COLUMN_BUDGET`` values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dissectkit.base.params import NoParams
from dissectkit.labelling.columns import Column, LabelContext
from dissectkit.labelling.streaming import Moments

if TYPE_CHECKING:
    import torch

    from dissectkit.labelling.evidence import LayerLabels

__all__ = ["QUALITY", "ActivationColumns", "QUALITY_COLUMNS", "Z_MIN", "average_ranks", "label_quality", "layer_quality"]

QUALITY_COLUMNS = ("sim_corr", "top_auc", "sim_z", "interpretable")
Z_MIN = 2.0
TOP_FRACTION = 0.05
CONCEPT_BLOCK = 512
NEURON_BLOCK = 512
COLUMN_BUDGET = 1 << 26  # activation values gathered at once from streamed blocks (256 MB of float32)
CONCEPT_RANK_BUDGET = 1 << 25  # N x C concept ranks kept between layers (2 x 128 MB of float32)


class ActivationColumns:
    """A layer's activations ``[N, K]`` read by columns: ``columns(idx)`` -> ``[N, len(idx)]``.

    From a tensor (``ActivationColumns.of(A)``) or from ``blocks``, a zero-argument callable giving a
    fresh iterator of ``[n_i, K]`` row blocks (one pass over them per call)."""

    def __init__(self, blocks: Callable[[], Any], n_images: int, n_neurons: int) -> None:
        self.blocks = blocks
        self.shape = (n_images, n_neurons)

    @classmethod
    def of(cls, activations: Any) -> ActivationColumns:
        import torch

        A = torch.as_tensor(activations)
        return cls(lambda: iter([A]), int(A.shape[0]), int(A.shape[1]))

    def columns(self, idx: torch.Tensor) -> torch.Tensor:
        import torch

        idx = idx.cpu()
        parts = [torch.as_tensor(b)[:, idx].float() for b in self.blocks()]
        return torch.cat(parts) if parts else torch.zeros(0, len(idx))



def average_ranks(X: torch.Tensor) -> torch.Tensor:
    """Ranks (1..N, ties get their average rank) of every column of ``X [N, M]``, float64."""
    import torch

    N, M = X.shape
    vals, order = torch.sort(X, dim=0, stable=True)
    new = torch.ones_like(vals, dtype=torch.bool)
    new[1:] = vals[1:] != vals[:-1]
    gid = new.long().cumsum(0) - 1
    pos = torch.arange(1, N + 1, dtype=torch.float64, device=X.device).unsqueeze(1).expand(N, M)
    sums = torch.zeros((N, M), dtype=torch.float64, device=X.device).scatter_add_(0, gid, pos)
    counts = torch.zeros((N, M), dtype=torch.float64, device=X.device).scatter_add_(0, gid, torch.ones_like(pos))
    avg = (sums / counts.clamp(min=1)).gather(0, gid)
    return torch.empty_like(avg).scatter_(0, order, avg)


def _standardised_ranks(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column ranks centred and scaled to unit L2 norm (float32; a constant column is all 0), and the
    constant columns (:attr:`~dissectkit.labelling.streaming.Moments.constant`, the dead-neuron rule).

    The dot product of two such columns is their Spearman correlation."""

    return _standardised(average_ranks(X), X)  # a constant column: all 0 (its centred ranks are exactly 0)


class _ConceptRanks:
    """Every concept's similarity ``V t_c`` over the probe, ranked: standardised ranks (for the
    correlations) and average ranks (for the AUCs), by blocks of ``concept_block`` concepts; formed
    once (``kept``) or, past :data:`CONCEPT_RANK_BUDGET`, again at each call of :meth:`blocks`."""

    def __init__(self, V: torch.Tensor, T: torch.Tensor, concept_block: int) -> None:
        self.V, self.T, self.concept_block = V, T, concept_block
        self.kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._whole: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if V.shape[0] * T.shape[0] <= CONCEPT_RANK_BUDGET:
            self.kept = [self._block(c0) for c0 in range(0, T.shape[0], concept_block)]

    def _block(self, c0: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        P = self.V @ self.T[c0 : c0 + self.concept_block].T
        ranks = average_ranks(P)
        R, const = _standardised(ranks, P)
        return R, ranks.float(), const  # average ranks are halves of integers: exact in float32 below 2**23 images

    def blocks(self) -> Any:
        """``(standardised ranks [N, block], average ranks, constant columns)`` of every concept block."""
        if self.kept is not None:
            return iter(self.kept)
        return (self._block(c0) for c0 in range(0, self.T.shape[0], self.concept_block))

    def columns(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same for the concepts ``idx`` (in that order)."""
        import torch

        if self.kept is None:
            P = self.V @ self.T[idx].T
            ranks = average_ranks(P)
            R, const = _standardised(ranks, P)
            return R, ranks, const
        if self._whole is None:
            R, ranks, const = zip(*self.kept, strict=True)
            self._whole = (torch.cat(R, dim=1), torch.cat(ranks, dim=1), torch.cat(const))
        R, ranks, const = self._whole
        return R[:, idx], ranks[:, idx].double(), const[idx]


_MEMO: dict[Any, _ConceptRanks] = {}


def _concept_ranks(V: torch.Tensor, T: torch.Tensor, concept_block: int) -> _ConceptRanks:
    """The concept ranks of (V, T), kept for the next call with the same embeddings (the run's next
    layer or method); one entry."""
    import hashlib

    key = (str(V.device), tuple(V.shape), tuple(T.shape), concept_block,
           hashlib.blake2b(V.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest(),
           hashlib.blake2b(T.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest())
    if key not in _MEMO:
        _MEMO.clear()
        _MEMO[key] = _ConceptRanks(V, T, concept_block)
    return _MEMO[key]


def _standardised(ranks: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_standardised_ranks` from ranks already formed."""
    import torch

    R = ranks - ranks.mean(0, keepdim=True)
    norm = R.norm(dim=0)
    R = R / torch.where(norm > 0, norm, torch.ones_like(norm))
    return R.float(), Moments.of(X).constant


def layer_quality(
    activations: torch.Tensor | ActivationColumns,
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    label_index: Sequence[int | None],
    top_fraction: float = TOP_FRACTION,
    concept_block: int = CONCEPT_BLOCK,
    device: str | None = None,
    neuron_block: int = NEURON_BLOCK,
) -> dict[str, list[Any]]:
    """Quality columns of one layer. ``activations [N, K]`` (or :class:`ActivationColumns`), ``image_embeddings [N, D]``,
    ``text_embeddings [C, D]`` (every concept of the set), ``label_index[k]``: the concept index of
    neuron k's label or ``None``. Returns ``{column: [K values]}`` with ``None`` where undefined
    (no label, constant activation or fewer than 2 images)."""
    import torch

    dev = torch.device(device or "cpu")
    A = activations if isinstance(activations, ActivationColumns) else ActivationColumns.of(activations)
    V = torch.nn.functional.normalize(torch.as_tensor(image_embeddings).to(dev, torch.float32), dim=1)
    T = torch.nn.functional.normalize(torch.as_tensor(text_embeddings).to(dev, torch.float32), dim=1)
    N, K = A.shape
    neuron_block = max(1, min(neuron_block, COLUMN_BUDGET // max(N, 1)))
    out: dict[str, list[Any]] = {c: [None] * K for c in QUALITY_COLUMNS}
    labelled = [k for k, c in enumerate(label_index) if c is not None]
    if N < 2 or not labelled or T.shape[0] == 0:
        return out
    concepts = _concept_ranks(V, T, concept_block)
    C = T.shape[0]
    n1 = min(max(1, int(math.ceil(top_fraction * N))), N - 1)
    # per neuron: moments of corr(neuron, every concept) (the z-score reference), and for a labelled
    # neuron its label's own similarity column: Spearman and the AUC of its top images
    s1 = torch.zeros(K, dtype=torch.float64, device=dev)
    s2 = torch.zeros(K, dtype=torch.float64, device=dev)
    dead = torch.zeros(K, dtype=torch.bool, device=dev)
    position = {k: j for j, k in enumerate(labelled)}
    rho = torch.zeros(len(labelled), dtype=torch.float64, device=dev)
    auc = torch.zeros(len(labelled), dtype=torch.float64, device=dev)
    const_p = torch.zeros(len(labelled), dtype=torch.bool, device=dev)
    for k0 in range(0, K, neuron_block):
        k1 = min(K, k0 + neuron_block)
        cols = A.columns(torch.arange(k0, k1)).to(dev)
        Ra, dead[k0:k1] = _standardised_ranks(cols)
        for Rp, _ranks, _const in concepts.blocks():
            corr = (Ra.T @ Rp).double()  # [neuron block, concept block]
            s1[k0:k1] += corr.sum(1)
            s2[k0:k1] += (corr * corr).sum(1)
        mine = [k for k in range(k0, k1) if k in position]
        if not mine:
            continue
        js = torch.tensor([position[k] for k in mine], device=dev)
        local = torch.tensor([k - k0 for k in mine], device=dev)
        Rp_lab, ranks_lab, const_p[js] = concepts.columns(torch.tensor([label_index[k] for k in mine], device=dev))
        rho[js] = (Ra[:, local] * Rp_lab).sum(0).double()
        top = torch.topk(cols[:, local], n1, dim=0).indices  # [n1, labelled in the block]
        auc[js] = (ranks_lab.gather(0, top).sum(0) - n1 * (n1 + 1) / 2) / (n1 * (N - n1))
    mean = s1 / C
    sd = (s2 / C - mean * mean).clamp(min=0).sqrt()
    units = torch.tensor(labelled, device=dev)
    z = (rho - mean[units]) / sd[units].clamp(min=1e-12)
    bad = dead[units] | const_p
    for j, k in enumerate(labelled):
        if bool(bad[j]):
            continue
        r, zz = float(rho[j]), float(z[j])
        out["sim_corr"][k] = r
        out["top_auc"][k] = float(auc[j])
        out["sim_z"][k] = zz
        out["interpretable"][k] = bool(zz >= Z_MIN and r > 0)
    return out


def label_quality(
    activations: torch.Tensor | ActivationColumns,
    image_embeddings: torch.Tensor,
    encode_texts: Callable[[list[str]], torch.Tensor],
    concepts: Sequence[Any],
    labels: LayerLabels,
    device: str | None = None,
) -> dict[str, list[Any]]:
    """:func:`layer_quality` of a method's ``LayerLabels`` (the top-1 concept of each neuron), the
    concept texts embedded bare by ``encode_texts`` (the engine's cached text encoder)."""
    from dissectkit.labelling.evidence import concept_list

    texts = [c.text for c in concept_list(concepts)]
    where = {t: i for i, t in enumerate(texts)}
    label_index = [where.get(label) if label is not None else None for label in labels.top1()]
    return layer_quality(activations, image_embeddings, encode_texts(texts), label_index, device=device)


class QualityColumns:
    """Label quality as a column group (:mod:`dissectkit.labelling.columns`)."""

    name = "quality"
    columns = (
        Column("sim_corr", "Spearman correlation over the probe of the activation and the label's image-text similarity", better="higher"),
        Column("top_auc", "AUC of the label's similarity separating the neuron's top-activating images from the rest", better="higher"),
        Column("sim_z", "sim_corr as a z-score among the neuron's correlations with every concept", better="higher"),
        Column("label_supported", f"the dissector supports the label: sim_z >= {Z_MIN:g} and sim_corr > 0 "
               "(not the paper's 'interpretable', which is the study's meets_global)", kind="bool", better="higher"),
        Column("interpretable", "deprecated alias of label_supported (kept for one release, removed in 0.3)", kind="bool"),
    )

    params = NoParams

    def compute(self, ctx: LabelContext, params: Any) -> dict[str, list[Any]]:
        ev = ctx.evidence
        columns = ActivationColumns(ctx.activation_blocks, ev.n_images, ctx.n_neurons)
        out = label_quality(columns, ev.image_embeddings, ev.encode_texts, ctx.concepts, ctx.labels, ctx.device)
        out["label_supported"] = out["interpretable"]
        return out


QUALITY = QualityColumns()
