"""Label stability under probe resampling (docs/methods.md, "Label stability").

``B`` bootstrap resamples of the N evidence rows (drawn with replacement, seeded) are given to a
method as per-row multiplicity counts (:class:`Resamples`), so every resample is computed in the
same passes over the activations: the method's ``label_resampled`` member returns each resample's
top-1 concept and the score of the full-probe label in it (:class:`ResampledLabels`). The column
group :data:`STABILITY` turns that into ``stability`` (the fraction of resamples whose top-1 is the
full-probe label), ``stability_group`` (the same at synonym-group level, when the concept set has
groups) and the percentile interval ``score_lo`` / ``score_hi`` of the label's score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from dissectkit.base.params import Params
from dissectkit.labelling.columns import Column, LabelContext

if TYPE_CHECKING:
    import torch

    from dissectkit.labelling.evidence import LayerLabels

__all__ = [
    "STABILITY",
    "STABILITY_COLUMNS",
    "ResampledLabels",
    "ResampledScores",
    "Resamples",
    "StabilityParams",
    "label_indices",
    "stability_columns",
]

STABILITY_COLUMNS = ("stability", "stability_group", "score_lo", "score_hi")
_DRAW = 1 << 20  # indices drawn at once when the counts are built
TIE = 1e-5  # relative: candidate scores this close to the best are tied (the first candidate wins)


@dataclass
class Resamples:
    """``n`` bootstrap resamples of ``n_images`` rows as multiplicity counts ``counts [n, N]`` (uint8):
    resample ``b`` draws N row indices uniformly with replacement from ``torch.Generator().manual_seed(seed)``
    (resample after resample, in blocks of ``2**20`` draws) and counts how often each row was drawn.
    ``candidates``: how many of each neuron's best full-probe concepts a method compares in every
    resample (docs/methods.md)."""

    n: int
    n_images: int
    seed: int = 0
    candidates: int = 10
    counts: torch.Tensor | None = field(default=None, repr=False)
    fraction: float = 1.0

    def __post_init__(self) -> None:
        import torch

        if self.counts is not None:
            self.counts = torch.as_tensor(self.counts)
            self.n, self.n_images = int(self.counts.shape[0]), int(self.counts.shape[1])
            return
        N = self.n_images
        draws = self.size
        gen = torch.Generator().manual_seed(int(self.seed))
        counts = torch.zeros((self.n, N), dtype=torch.int32)
        for b in range(self.n):
            for s in range(0, draws, _DRAW):
                idx = torch.randint(N, (min(_DRAW, draws - s),), generator=gen)
                counts[b] += torch.bincount(idx, minlength=N).to(torch.int32)
        if N and int(counts.max()) > 255:  # never for N >= 2: P(count > 255) is astronomically small
            raise ValueError("a row was drawn more than 255 times")
        self.counts = counts.to(torch.uint8)

    @property
    def size(self) -> int:
        """Rows drawn per resample: ``round(fraction * N)`` (at least one)."""
        return max(1, round(self.fraction * self.n_images)) if self.n_images else 0

    @classmethod
    def ones(cls, n: int, n_images: int, candidates: int = 10) -> Resamples:
        """``n`` copies of the full probe (every count 1): each resample must reproduce the labels."""
        import torch

        return cls(n, n_images, candidates=candidates, counts=torch.ones((n, n_images), dtype=torch.uint8))

    def weights(self, start: int, stop: int, device: Any = None, dtype: Any = None) -> torch.Tensor:
        """The counts of rows ``start .. stop`` as ``[n, stop - start]`` weights (float32 by default)."""
        import torch

        assert self.counts is not None
        w = self.counts[:, start:stop]
        return w.to(device=device or "cpu", dtype=dtype or torch.float32)

    def of_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The counts ``[n, *rows.shape]`` (int64) of the given row indices."""
        import torch

        assert self.counts is not None
        flat = rows.reshape(-1).cpu()
        return self.counts[:, flat].to(torch.int64).reshape(self.n, *rows.shape).to(rows.device)


@dataclass
class ResampledLabels:
    """What a method's ``label_resampled`` returns for one layer: ``top1 [B, K]`` (int64), each
    resample's top-1 concept as an index into ``evidence.concept_texts`` (``-1``: no concept in that
    resample), and ``score [B, K]`` (float64), the score of the neuron's full-probe label in each
    resample (NaN where it has none)."""

    top1: torch.Tensor
    score: torch.Tensor


@dataclass
class ResampledScores:
    """What a similarity's ``resampled_scores`` returns: ``candidates [K, m]``, each neuron's ``m`` best
    concepts on the full probe (indices, best first), and ``scores [B, K, m]``, their scores in each
    resample."""

    candidates: torch.Tensor
    scores: torch.Tensor

    def labels(self, label_index: torch.Tensor, none: torch.Tensor | None = None) -> ResampledLabels:
        """Each resample's top-1 (the first best candidate, scores within :data:`TIE` of the best tied)
        and the score of ``label_index [K]``
        (``-1``: no label); ``none [B, K]`` marks resamples that give a neuron no concept."""
        import torch

        cand = self.candidates.to(self.scores.device)
        S = self.scores.double()
        B = S.shape[0]
        S0 = torch.nan_to_num(S, nan=-torch.inf)
        top = S0.amax(2, keepdim=True)
        tied = top - TIE * (1 + top.abs()) <= S0  # float rounding of a tie (saturated soft_wpmi) is a tie
        best = tied.to(torch.uint8).argmax(2)  # [B, K]: the first best candidate (full-probe order)
        top1 = cand.unsqueeze(0).expand(B, -1, -1).gather(2, best.unsqueeze(2)).squeeze(2)
        lab = label_index.to(cand.device).unsqueeze(1)
        hit = cand == lab  # [K, m]
        where = hit.float().argmax(1)
        score = S.gather(2, where.view(1, -1, 1).expand(B, -1, 1)).squeeze(2)
        score = torch.where(hit.any(1).unsqueeze(0), score, torch.full_like(score, float("nan")))
        if none is not None:
            top1 = torch.where(none.to(top1.device), torch.full_like(top1, -1), top1)
        return ResampledLabels(top1.cpu(), score.cpu())


def label_indices(labels: LayerLabels, names: list[str]) -> torch.Tensor:
    """Each neuron's full-probe top-1 as an index into ``names`` (``-1``: no label, or not in ``names``)."""
    import torch

    where = {t: i for i, t in enumerate(names)}
    return torch.tensor([where.get(c, -1) if c is not None else -1 for c in labels.top1()], dtype=torch.int64)


def candidate_indices(S: torch.Tensor, m: int) -> torch.Tensor:
    """Each row's ``m`` best columns of ``S [K, C]``, descending, ties by the lower index (the labels' rule)."""
    import torch

    S = S.detach().float()
    m = max(1, min(m, S.shape[1]))
    idx = S.topk(m, dim=1).indices.sort(dim=1).values  # the m best, in concept order
    order = torch.sort(S.gather(1, idx), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


class StabilityParams(Params):
    """``resamples`` (B) bootstrap resamples of the probe from ``seed`` (default: the run's seed);
    ``interval``: the central share of the resampled scores that ``score_lo`` .. ``score_hi`` span;
    ``candidates``: each neuron's best full-probe concepts compared in every resample; ``fraction``:
    each resample draws ``round(fraction * N)`` rows (1: the bootstrap; below 1: an m-out-of-n one)."""

    resamples: int = Field(20, ge=2, le=1000)
    seed: int | None = None
    interval: float = Field(0.9, gt=0, lt=1)
    candidates: int = Field(10, ge=2)
    fraction: float = Field(1.0, gt=0, le=1)


def stability_columns(
    resampled: ResampledLabels,
    label_index: torch.Tensor,
    group_of: list[str] | None = None,
    interval: float = 0.9,
) -> dict[str, list[Any]]:
    """The columns from one layer's resampled labels: ``label_index [K]`` is each neuron's full-probe
    top-1 (``-1``: none, no value); ``group_of[c]`` the synonym group of concept ``c`` (``None``: the
    concept set has no groups, ``stability_group`` stays empty)."""
    import torch

    top1, score = resampled.top1.cpu(), resampled.score.cpu().double()
    B, K = top1.shape
    out: dict[str, list[Any]] = {c: [None] * K for c in STABILITY_COLUMNS}
    same = (top1 == label_index.view(1, -1)).double().mean(0)
    q = torch.tensor([(1 - interval) / 2, (1 + interval) / 2], dtype=torch.float64)
    for k in range(K):
        c = int(label_index[k])
        if c < 0:
            continue
        out["stability"][k] = float(same[k])
        if group_of is not None:
            g = group_of[c]
            out["stability_group"][k] = sum(int(t) >= 0 and group_of[int(t)] == g for t in top1[:, k].tolist()) / B
        vals = score[:, k][~score[:, k].isnan()]
        if len(vals):
            lo, hi = torch.quantile(vals, q).tolist()
            out["score_lo"][k], out["score_hi"][k] = lo, hi
    return out


class StabilityColumns:
    """Label stability as a column group (:mod:`dissectkit.labelling.columns`)."""

    name = "stability"
    columns = (
        Column("stability", "fraction of bootstrap resamples of the probe whose top-1 concept is the label", better="higher"),
        Column("stability_group", "fraction of resamples whose top-1 lies in the label's synonym group "
               "(empty without concept groups)", better="higher"),
        Column("score_lo", "lower end of the percentile interval of the label's score over the resamples"),
        Column("score_hi", "upper end of the percentile interval of the label's score over the resamples"),
    )
    params = StabilityParams

    def compute(self, ctx: LabelContext, params: Any) -> dict[str, list[Any]]:
        from dissectkit.base.contract import adapt
        from dissectkit.labelling.groups import group_names

        if ctx.method is None:
            return {}
        ev = ctx.evidence
        seed = ev.seed if params.seed is None else params.seed
        resamples = Resamples(params.resamples, ev.n_images, seed, params.candidates, fraction=params.fraction)
        method = adapt("method", ctx.method)
        got = method.label_resampled(ev, ctx.labels, resamples)
        if got is None:
            return {}
        names = [c.text for c in ctx.concepts]
        return stability_columns(got, label_indices(ctx.labels, names), group_names(ctx.concepts), params.interval)


STABILITY = StabilityColumns()
