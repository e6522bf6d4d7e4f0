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
standardised ranks, over blocks of neurons and of concepts so memory stays
``O(N * (NEURON_BLOCK + CONCEPT_BLOCK))`` whatever K and C (the concepts' ranks are formed again
for each block of neurons). Activations may be given as :class:`ActivationColumns` over streamed
row blocks (the engine's cached chunks): each block of neuron columns is then gathered by one pass
over the chunks, so a layer is never held whole (Spearman needs every image of a neuron at once,
so memory is ``O(N * block)``, the block shrinking as N grows: ``COLUMN_BUDGET`` values).
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
    import torch

    R = average_ranks(X)
    R = R - R.mean(0, keepdim=True)  # exactly 0 in a constant column
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
    # z-score reference: moments of corr(neuron, every concept), over neuron x concept blocks
    s1 = torch.zeros(K, dtype=torch.float64, device=dev)
    s2 = torch.zeros(K, dtype=torch.float64, device=dev)
    dead = torch.zeros(K, dtype=torch.bool, device=dev)
    C = T.shape[0]
    for k0 in range(0, K, neuron_block):
        cols = A.columns(torch.arange(k0, min(K, k0 + neuron_block))).to(dev)
        Ra, dead[k0 : k0 + neuron_block] = _standardised_ranks(cols)
        for c0 in range(0, C, concept_block):
            Rp, _ = _standardised_ranks(V @ T[c0 : c0 + concept_block].T)
            corr = (Ra.T @ Rp).double()  # [neuron block, concept block]
            s1[k0 : k0 + neuron_block] += corr.sum(1)
            s2[k0 : k0 + neuron_block] += (corr * corr).sum(1)
    mean = s1 / C
    sd = (s2 / C - mean * mean).clamp(min=0).sqrt()
    # the label's own similarity column per labelled neuron
    n1 = min(max(1, int(math.ceil(top_fraction * N))), N - 1)
    rho = torch.zeros(len(labelled), dtype=torch.float64, device=dev)
    auc = torch.zeros(len(labelled), dtype=torch.float64, device=dev)
    const_p = torch.zeros(len(labelled), dtype=torch.bool, device=dev)
    for j0 in range(0, len(labelled), neuron_block):
        sl = slice(j0, j0 + neuron_block)
        units = torch.tensor(labelled[sl], device=dev)
        idx = torch.tensor([label_index[k] for k in labelled[sl]], device=dev)
        P_lab = V @ T[idx].T  # [N, block]: each labelled neuron's own similarity column
        ranks_lab = average_ranks(P_lab)
        Rp_lab, const_p[sl] = _standardised_ranks(P_lab)
        cols = A.columns(units).to(dev)
        Ra_lab, _ = _standardised_ranks(cols)
        rho[sl] = (Ra_lab * Rp_lab).sum(0).double()
        top = torch.topk(cols, n1, dim=0).indices  # [n1, block]
        auc[sl] = (ranks_lab.gather(0, top).sum(0) - n1 * (n1 + 1) / 2) / (n1 * (N - n1))
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
