"""Label stability of the built-in similarities (the methods': ``builtin/methods/_resampled.py``): their scores under B bootstrap resamples
of the probe, every resample in the same passes over the activations (docs/methods.md, "Label
stability"). A resample is the probe with row ``i`` counted ``resamples.counts[b, i]`` times
(:class:`~dissectkit.labelling.stability.Resamples`); each neuron's ``candidates`` best concepts on
the full probe are scored in every resample.

- ``wpmi`` / ``soft_wpmi``: one pass keeps each neuron's top ``M = 2 top_k + 64`` rows (more when a
  resample's multiplicities do not fill ``top_k`` slots from them); a resample's top-k list is those
  rows in order, each repeated by its count; the layer prior of a candidate concept is formed again
  from the ``PRIOR_NEURONS`` neurons with the largest full-probe ``L`` for it (all of a smaller layer),
  the others' terms held at their full-probe values.
- ``rank_reorder``: the same, with ``n = floor(N * top_fraction)`` top rows and the baseline of the
  resampled top values.
- ``cos`` / ``cos3``: weighted sums ``sum_i w_i a_i p_i``, ``sum_i w_i a_i^2``, ``sum_i w_i p_i^2``
  in one pass (``cos3``: centred at the full probe's means, then cubed).
- ``mammi``: each resample's activation range (its own threshold ``tau``), then the weighted sums of
  the representative images' template-relative cosines.
- ``netdissect``: the per-image intersections and activated / mask pixel counts at the full-probe
  thresholds ``T_k``, summed with each resample's multiplicities.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from dissectkit.base.errors import EvidenceError
from dissectkit.labelling.stability import (
    ResampledScores,
    Resamples,
    candidate_indices,
)
from dissectkit.labelling.streaming import ActivationStream, stream_top

if TYPE_CHECKING:
    import torch


ELEMS = 1 << 22  # values of a [.., neurons, candidates] temporary held at once
PRIOR_NEURONS = 16  # wpmi / soft_wpmi: neurons whose terms of a concept's prior are resampled


def _chunk(per_neuron: int, K: int) -> int:
    return max(1, min(K, ELEMS // max(1, per_neuron)))


def _stream(A: Any, sim: Any) -> ActivationStream:
    if isinstance(A, ActivationStream):
        return A
    return ActivationStream.from_tensor(A, sim.layer, sim.device)


def unique_candidates(cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The concepts among the candidates and each candidate's position among them."""
    import torch

    U, inv = torch.unique(cand, return_inverse=True)
    return U, inv.reshape(cand.shape)


def resampled_scores(sim: Any, images: torch.Tensor, texts: torch.Tensor, A: Any, resamples: Resamples) -> ResampledScores | None:
    """A similarity's scores under the resamples: a built-in similarity's from this module, any other's
    from its :meth:`~dissectkit.base.contract.Similarity.resampled_scores` (``None``: not defined)."""
    from dissectkit.builtin.similarities import Cos, Cos3, RankReorder, SoftWpmi, Wpmi

    if isinstance(sim, Cos | Cos3 | RankReorder | SoftWpmi | Wpmi):
        return similarity_resampled(sim, images, texts, A, resamples)
    own = getattr(sim, "resampled_scores", None)
    return own(images, texts, A, resamples) if own is not None else None


def similarity_resampled(sim: Any, images: torch.Tensor, texts: torch.Tensor, A: Any, resamples: Resamples) -> ResampledScores | None:
    """:meth:`~dissectkit.base.contract.Similarity.resampled_scores` of a built-in similarity."""
    import torch

    from dissectkit.builtin.similarities import Cos, Cos3, RankReorder, SoftWpmi, Wpmi

    with torch.no_grad():
        if isinstance(sim, SoftWpmi | Wpmi):
            return _pmi(sim, images, texts, A, resamples)
        if isinstance(sim, Cos3 | Cos):
            return _cos(sim, images, texts, A, resamples, cube=isinstance(sim, Cos3))
        if isinstance(sim, RankReorder):
            return _rank_reorder(sim, images, texts, A, resamples)
    return None


def _top_rows(stream: ActivationStream, k: int, resamples: Resamples, device: Any):
    """Each neuron's top ``M`` rows and values, enough for every resample to fill ``k`` slots, and the
    cumulative multiplicities ``cum [B, K, M]`` of those rows."""
    N = stream.n_images
    M = min(N, 2 * k + 64)
    while True:
        top, vals = stream_top(stream, M, device)
        cum = resamples.of_rows(top).cumsum(2)
        if M == N or bool((cum[..., -1] >= k).all()):
            return top, vals, cum
        M = min(N, 2 * M)


def _slots(cum: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, K, k]``: the position (among a neuron's top rows) of the row in each of the ``k`` slots of
    a resample's top-k list (a row fills as many consecutive slots as it was drawn)."""
    import torch

    j = torch.arange(k, device=cum.device).expand(*cum.shape[:2], k).contiguous()
    return torch.searchsorted(cum.contiguous(), j, right=True)


def _pmi(sim: Any, images: torch.Tensor, texts: torch.Tensor, A: Any, resamples: Resamples) -> ResampledScores:
    import torch

    from dissectkit.builtin.similarities import LazyP

    prm = sim.params
    src = LazyP(images, texts).to(sim.device)
    stream = _stream(A, sim)
    N, C = src.shape
    k = prm.top_k
    if k > N:
        raise EvidenceError(f"{sim.name} with top_k={k} needs at least {k} probe images; layer {sim.layer or '?'} has {N}.")
    top, _, cum = _top_rows(stream, k, resamples, sim.device)
    K, dev = top.shape[0], top.device
    L = sim._layer_L(src, top[:, :k])  # the similarity's own L, before the prior
    prior = torch.empty(C, dtype=torch.float64, device=dev)
    step = max(1, sim._budget_elems() // 4 // max(K, 1))
    for c0 in range(0, C, step):
        prior[c0 : c0 + step] = torch.logsumexp(L[:, c0 : c0 + step], dim=0) - math.log(K)
    cand = candidate_indices(L - prm.lam * prior, resamples.candidates).to(dev)
    # the prior of each candidate concept is formed again in every resample from the PRIOR_NEURONS
    # neurons with the largest full-probe L for it; the other neurons' terms keep their full-probe values
    U = torch.unique(cand)
    R = min(K, PRIOR_NEURONS)
    LU = L[:, U]  # [K, |U|]
    lead = LU.topk(R, dim=0).indices.T  # [|U|, R]
    rest = LU.scatter(0, lead.T, -math.inf)
    rest = torch.logsumexp(rest, dim=0) if R < K else torch.full((U.numel(),), -math.inf, dtype=torch.float64, device=dev)
    del L, LU
    rows = torch.unique(top)
    remap = torch.full((N,), -1, dtype=torch.long, device=dev)
    remap[rows] = torch.arange(rows.numel(), device=dev)
    alpha, beta = (torch.tensor(v, dtype=torch.float32, device=dev) for v in sim._coefficients(k))
    slots = _slots(cum, k)  # [B, K, k]
    B, m = resamples.n, cand.shape[1]
    # the (neuron, concept) pairs whose L is resampled: each neuron's candidates, each candidate's lead neurons
    pairs_k = torch.cat([torch.arange(K, device=dev).repeat_interleave(m), lead.reshape(-1)])
    pairs_c = torch.cat([torch.searchsorted(U, cand.contiguous()).reshape(-1),
                         torch.arange(U.numel(), device=dev).repeat_interleave(R)])  # positions in U
    Lpairs = torch.empty((B, pairs_k.numel()), dtype=torch.float64, device=dev)
    log_z = None
    width = max(1, sim._budget_elems() // 2 // max(rows.numel(), 1))  # concepts of P held at once
    for u0 in range(0, U.numel(), width):
        u1 = min(U.numel(), u0 + width)
        PU = torch.empty((rows.numel(), u1 - u0), dtype=torch.float32, device=dev)  # P[rows, U[u0:u1]]
        first = log_z is None
        if first:
            log_z = torch.empty(rows.numel(), dtype=torch.float64, device=dev)
        step = max(1, (1 << 20) // max(C if first else u1 - u0, 1))
        for s in range(0, rows.numel(), step):
            r = rows[s : s + step]
            if first:  # the whole rows: the softmax's normaliser, and the U columns
                P = src.rows(r)
                PU[s : s + step] = P[:, U[u0:u1]]
                log_z[s : s + step] = torch.logsumexp(P.mul_(prm.a), dim=1).double()
            else:
                PU[s : s + step] = src.I.index_select(0, r) @ src.T[U[u0:u1]].T
        chosen = ((pairs_c >= u0) & (pairs_c < u1)).nonzero().flatten()
        step = max(1, ELEMS // (B * k))
        for s in range(0, chosen.numel(), step):
            idx = chosen[s : s + step]
            kn, cn = pairs_k[idx], pairs_c[idx] - u0
            at = remap[top[kn]]  # [n, M]: rows of P
            Q = (prm.a * PU[at, cn.unsqueeze(1)].double() - log_z[at]).exp_().float()
            Qs = Q.unsqueeze(0).expand(B, -1, -1).gather(2, slots[:, kn])  # [B, n, k]
            Lpairs[:, idx] = Qs.mul_(alpha).add_(beta).log_().sum(2, dtype=torch.float64)  # float32 terms, float64 sum
        del PU
    n_cand = K * m
    Lb = Lpairs[:, :n_cand].view(B, K, m)
    LR = Lpairs[:, n_cand:].view(B, U.numel(), R)
    prior_b = torch.logaddexp(torch.logsumexp(LR, dim=2), rest.unsqueeze(0)) - math.log(K)  # [B, |U|]
    where = torch.searchsorted(U, cand.contiguous())  # [K, m]: each candidate's position in U
    return ResampledScores(cand, Lb - prm.lam * prior_b[:, where])


def _cos(sim: Any, images: torch.Tensor, texts: torch.Tensor, A: Any, resamples: Resamples, cube: bool) -> ResampledScores:
    import torch

    from dissectkit.builtin.similarities import LazyP

    stream = _stream(A, sim)
    dev = sim.device
    full = sim.from_embeddings(images, texts, stream)
    cand = candidate_indices(full, resamples.candidates).to(dev)
    del full
    U, where = unique_candidates(cand)
    src = LazyP(images, texts[U.to(texts.device)]).to(dev)
    K, m = cand.shape
    B = resamples.n
    if cube:  # centred at the full probe's means
        total = None
        for _, Ab in stream.blocks():
            part = Ab.to(dev).sum(0).double()
            total = part if total is None else total.add_(part)
        a_mean = (total / stream.n_images).float()
        p_mean = src.col_mean()
    sa2 = torch.zeros((B, K), dtype=torch.float64, device=dev)
    sp2 = torch.zeros((B, U.numel()), dtype=torch.float64, device=dev)
    cross = torch.zeros((B, K, m), dtype=torch.float64, device=dev)
    for s, Ab in stream.blocks():
        Ab = Ab.to(dev)
        n = Ab.shape[0]
        W = resamples.weights(s, s + n, dev)
        Pu = src.block(s, s + n)
        if cube:
            Ab = (Ab - a_mean).pow_(3)
            Pu = (Pu - p_mean).pow_(3)
        sa2 += (W @ (Ab * Ab)).double()
        sp2 += (W @ (Pu * Pu)).double()
        kc = _chunk(n * m, K)
        for k0 in range(0, K, kc):
            k1 = min(K, k0 + kc)
            G = Pu[:, where[k0:k1]].mul_(Ab[:, k0:k1].unsqueeze(2))  # [n, kc, m]
            cross[:, k0:k1] += (W @ G.reshape(n, -1)).reshape(B, k1 - k0, m).double()
    if cube:
        na, npp = sa2.sqrt().clamp_min(1e-3), sp2.sqrt().clamp_min(1e-3)
    else:
        na, npp = sa2.sqrt(), sp2.sqrt()
        na = torch.where(na > 0, na, torch.ones_like(na))
        npp = torch.where(npp > 0, npp, torch.ones_like(npp))
    scores = cross / na.unsqueeze(2) / npp[:, where]
    return ResampledScores(cand, scores)


def _rank_reorder(sim: Any, images: torch.Tensor, texts: torch.Tensor, A: Any, resamples: Resamples) -> ResampledScores:
    import torch

    from dissectkit.builtin.similarities import LazyP

    prm = sim.params
    stream = _stream(A, sim)
    dev = sim.device
    full = sim.from_embeddings(images, texts, stream)  # also checks n >= 1
    cand = candidate_indices(full, resamples.candidates).to(dev)
    del full
    src = LazyP(images, texts).to(dev)
    n = math.floor(resamples.size * prm.top_fraction)
    if n < 1:
        raise EvidenceError(f"rank_reorder with top_fraction={prm.top_fraction} needs more than {resamples.size} "
                            "images per resample; raise output.columns.stability.fraction.")
    top, vals, cum = _top_rows(stream, n, resamples, dev)
    slots = _slots(cum, n)  # [B, K, n]
    B, K, m = resamples.n, top.shape[0], cand.shape[1]
    a = vals.unsqueeze(0).expand(B, -1, -1).gather(2, slots)  # [B, K, n], descending
    asc = a.flip(2)
    gen = torch.Generator(device="cpu").manual_seed(prm.seed)
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(prm.n_permutations)]).to(dev)
    base = torch.stack([(asc - asc[..., perm]).abs().pow(prm.p).mean(2) for perm in perms]).mean(0)  # [B, K]
    out = torch.empty((B, K, m), dtype=torch.float32, device=dev)
    kc = _chunk(max(B * n * m * 4, top.shape[1] * src.I.shape[1]), K)
    for k0 in range(0, K, kc):
        k1 = min(K, k0 + kc)
        P = torch.bmm(src.I[top[k0:k1]], src.T[cand[k0:k1]].transpose(1, 2))  # [kc, M, m]
        pos = slots[:, k0:k1].unsqueeze(3).expand(-1, -1, -1, m)
        Pg = P.unsqueeze(0).expand(B, -1, -1, -1).gather(2, pos)  # [B, kc, n, m]
        order = torch.sort(Pg, dim=2, stable=True).indices
        a_s = a[:, k0:k1].unsqueeze(3).expand_as(Pg).gather(2, order)
        err = (a_s - asc[:, k0:k1].unsqueeze(3)).abs_().pow_(prm.p).mean(2)
        out[:, k0:k1] = err / Pg.mean(2).clamp_min(1e-12).pow(prm.scale_p)
    flat = base <= 0
    out = out / torch.where(flat, torch.ones_like(base), base).unsqueeze(2)
    out[flat] = 0.0
    return ResampledScores(cand, -out)
