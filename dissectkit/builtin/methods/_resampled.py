"""Label stability of the built-in methods (``clip-dissect``, ``mammi``, ``netdissect``): each resample's
top-1 label and the full-probe label's score in it (docs/methods.md, "Label stability"; the
similarities' part: ``dissectkit.builtin.resampled``). A method passes in what this module needs of
its own module, so the two do not import each other."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dissectkit.builtin.methods._common import apply_template, checked_inputs, device_of, encode, unit_rows
from dissectkit.builtin.resampled import ELEMS, resampled_scores, unique_candidates
from dissectkit.labelling.stability import (
    ResampledLabels,
    ResampledScores,
    Resamples,
    candidate_indices,
    label_indices,
)
from dissectkit.labelling.streaming import ActivationStream

if TYPE_CHECKING:
    import torch

    from dissectkit.labelling.evidence import Evidence, LayerLabels

RANGE_ROWS = 48  # mammi: each neuron's extreme rows kept to find a resample's range (/ fraction)


def clip_dissect_resampled(method: Any, evidence: Evidence, labels: LayerLabels, resamples: Resamples) -> ResampledLabels | None:
    """``clip-dissect``: its similarity's resampled scores (``None`` when it has none)."""
    import torch

    device = device_of(method, evidence)
    A, V = checked_inputs(evidence, device)
    names = evidence.concept_texts
    T = encode(evidence, apply_template(method.params.template, names), device)
    got = resampled_scores(method.similarity, unit_rows(V), T, A, resamples)
    if got is None:
        return None
    out = got.labels(label_indices(labels, names))
    dead = A.dead.cpu()
    out.top1[:, dead] = -1
    out.score[:, dead] = float("nan")
    return ResampledLabels(out.top1, out.score.to(torch.float64))


def mammi_resampled(method: Any, evidence: Evidence, labels: LayerLabels, resamples: Resamples,
                    mammi_scores: Callable[..., Any], mammi_threshold: Callable[..., Any]) -> ResampledLabels:
    """``mammi``: each resample's own threshold (from its activation range) and summed scores
    (``mammi_scores`` and ``mammi_threshold``: the method's own)."""
    import torch

    device = device_of(method, evidence)
    A, V = checked_inputs(evidence, device)
    names = evidence.concept_texts
    tpl = method.params.template
    emb = encode(evidence, [tpl.format(c) for c in names] + [tpl.format("").strip()], device)
    T, t0 = emb[:-1], emb[-1]
    with torch.no_grad():
        full, _ = mammi_scores(A, V, T, t0, method.params.percentile)
        cand = candidate_indices(full, resamples.candidates).to(device)
        del full
        U, where = unique_candidates(cand)
        Du = T[U] - t0.unsqueeze(0)
        Vn = unit_rows(V)
        B, (K, m) = resamples.n, cand.shape
        lo, hi = _resampled_range(A, resamples, device)
        tau = mammi_threshold(lo, hi, method.params.percentile)  # float32 [B, K], as the method
        low = tau.amin(0)  # a row below every resample's threshold is representative in none
        cross = torch.zeros((K, B, m), dtype=torch.float64, device=device)
        for s, Ab in A.blocks():
            n = Ab.shape[0]
            W = resamples.weights(s, s + n, device)
            i, k = (Ab > low).nonzero(as_tuple=True)  # the (image, neuron) pairs that may be representative
            if not i.numel():
                continue
            Su = Vn[s : s + n] @ Du.T  # [n, |U|]: each image's template-relative cosines
            step = max(1, ELEMS // (B * m))
            for e0 in range(0, i.numel(), step):
                ii, kk = i[e0 : e0 + step], k[e0 : e0 + step]
                coef = W[:, ii] * (Ab[ii, kk].unsqueeze(0) > tau[:, kk])  # [B, e]: count if above that resample's tau
                vals = coef.T.unsqueeze(2) * Su[ii.unsqueeze(1), where[kk]].unsqueeze(1)  # [e, B, m]
                cross.index_add_(0, kk, vals.double())
        cross = cross.transpose(0, 1)  # [B, K, m]
    scores = ResampledScores(cand, cross)
    none = cross.amax(2) <= 0
    out = scores.labels(label_indices(labels, names), none)
    dead = A.dead.cpu()
    out.top1[:, dead] = -1
    return out


def _resampled_range(A: ActivationStream, resamples: Resamples, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Each resample's ``(min, max) [B, K]`` of every neuron over the rows it drew: the first drawn row
    among each neuron's ``T`` lowest and highest (one running top-k pass), the rare neuron whose ``T``
    extremes were all left out of a resample in a second, masked pass."""
    import torch

    from dissectkit.labelling.streaming import RunningTopK

    T = min(A.n_images, math.ceil(RANGE_ROWS / resamples.fraction))
    top = RunningTopK(T)
    for s, Ab in A.blocks():
        top.update(torch.cat([Ab, -Ab], 1).to(device), s)
    rows, vals, _ = top.result()  # [2K, T], best first
    K = rows.shape[0] // 2
    drawn = resamples.of_rows(rows) > 0  # [B, 2K, T]
    first = drawn.to(torch.uint8).argmax(2)  # the first drawn of the kept rows
    ext = vals.unsqueeze(0).expand(resamples.n, -1, -1).gather(2, first.unsqueeze(2)).squeeze(2)
    hi, lo = ext[:, :K].clone(), -ext[:, K:]
    missed = ~drawn.any(2)  # [B, 2K]
    if bool(missed.any()):
        hi[missed[:, :K]], lo[missed[:, K:]] = -math.inf, math.inf
        for s, Ab in A.blocks():
            W = resamples.weights(s, s + Ab.shape[0], device) > 0
            for b in missed.any(1).nonzero().flatten().tolist():
                sel = Ab[W[b]]
                if sel.shape[0]:
                    hi[b] = torch.where(missed[b, :K], torch.maximum(hi[b], sel.amax(0)), hi[b])
                    lo[b] = torch.where(missed[b, K:], torch.minimum(lo[b], sel.amin(0)), lo[b])
    return lo, hi


def _row_batches(evidence: Evidence) -> Iterator[tuple[torch.Tensor, list[Any], torch.Tensor]]:
    """``(maps [b, K, h, w], masks, rows [b])`` of the annotated images of each spatial batch, grouped by
    mask size, with each image's evidence row."""
    import torch

    start = 0
    for batch in evidence.spatial_maps():
        maps = torch.as_tensor(batch.maps)
        groups: dict[tuple[int, ...], list[int]] = {}
        for b, masks in enumerate(batch.masks):
            if masks:
                groups.setdefault(tuple(next(iter(masks.values())).shape), []).append(b)
        for _size, idx in groups.items():
            yield maps[idx], [batch.masks[b] for b in idx], torch.tensor(idx) + start
        start += maps.shape[0]


def netdissect_resampled(method: Any, evidence: Evidence, labels: LayerLabels, resamples: Resamples) -> ResampledLabels:
    """``netdissect`` over resampled images: IoU from the weighted per-image counts at the full-probe
    thresholds."""
    import torch

    from dissectkit.labelling.spatial_grid import upsample

    if evidence.spatial_maps is None:
        return None  # type: ignore[return-value]  # the method raised already when labelling
    device = device_of(method, evidence)
    names = evidence.concept_texts
    col = {c: j for j, c in enumerate(names)}
    K, total, dead = method._survey(evidence)
    _, group = method._plan(K, total)
    B = resamples.n
    top1 = torch.full((B, K), -1, dtype=torch.int64)
    score = torch.full((B, K), float("nan"), dtype=torch.float64)
    label = label_indices(labels, names)
    for k0 in range(0, K, group):
        k1 = min(K, k0 + group)
        kc = k1 - k0
        T = method.thresholds(evidence, k0, k1, device)
        seen: dict[int, int] = {}  # concept -> column of the accumulators
        inter = torch.zeros((B, kc, 0), dtype=torch.float64, device=device)
        lab = torch.zeros((B, 0), dtype=torch.float64, device=device)
        act = torch.zeros((B, kc), dtype=torch.float64, device=device)
        for maps, masks, rows in _row_batches(evidence):
            H, W = next(iter(masks[0].values())).shape
            gh, gw = method.grid(H, W)
            m = maps[:, k0:k1].to(device=device, dtype=torch.float32).transpose(0, 1)
            F = upsample(m, (gh, gw)).reshape(kc, len(masks), gh * gw)
            Mk = (T.view(-1, 1, 1) < F).float()  # [kc, b, P]
            w = resamples.of_rows(rows).to(device=device, dtype=torch.float64)  # [B, b]
            act += w @ Mk.sum(2).T.double()
            L, idx = method._grid_masks(masks, col, (H, W), (gh, gw), device)
            if not idx:
                continue
            new = [j for j in idx if j not in seen]
            if new:
                for j in new:
                    seen[j] = len(seen)
                inter = torch.cat([inter, inter.new_zeros((B, kc, len(new)))], 2)
                lab = torch.cat([lab, lab.new_zeros((B, len(new)))], 1)
            at = torch.tensor([seen[j] for j in idx], device=device)
            L = L.reshape(len(idx), len(masks), gh * gw)
            per_image = torch.einsum("kbp,cbp->bkc", Mk, L).double()  # [b, kc, c]
            inter[:, :, at] += torch.einsum("Bb,bkc->Bkc", w, per_image)
            lab[:, at] += w @ L.sum(2).T.double()
        if not seen:
            continue
        union = act.unsqueeze(2) + lab.unsqueeze(1) - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter)).cpu()  # [B, kc, c]
        concepts = torch.tensor(sorted(seen, key=seen.__getitem__))
        order = torch.argsort(concepts)  # columns in concept order: ties go to the lower concept
        iou, concepts = iou[:, :, order], concepts[order]
        best, arg = iou.max(2)
        ok = (best >= method.params.min_iou) & (best > 0)
        top1[:, k0:k1] = torch.where(ok, concepts[arg], torch.full_like(arg, -1))
        for j in range(kc):
            c = int(label[k0 + j])
            hit = (concepts == c).nonzero().flatten()
            if c >= 0 and hit.numel():
                score[:, k0 + j] = iou[:, j, int(hit[0])]
            elif c >= 0:
                score[:, k0 + j] = 0.0
    top1[:, dead.cpu()] = -1
    return ResampledLabels(top1, score)
