"""The MAMMI method: adaptive representative images and template-relative cosine matching."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from dissectkit.base.contract import Method
from dissectkit.base.errors import EvidenceError
from dissectkit.base.params import Params
from dissectkit.builtin.methods._common import blank_dead, checked_inputs, device_of, encode, unit_rows
from dissectkit.builtin.similarities import TOLERANCE_FACTOR, UNIT_ROUNDOFF
from dissectkit.labelling.evidence import Evidence, LayerLabels
from dissectkit.labelling.streaming import ActivationStream


class MammiParams(Params):
    percentile: float = Field(93.0, ge=0, le=100)
    beta: float = Field(0.95, ge=0, le=1)
    template: str = "A chest x-ray image of a {}"
    precision: Literal["default", "published"] = Field(
        "default", description="the threshold's arithmetic: default float32; published: float64 as the "
        "published code computes it under numpy 1.26, then compared in float32 (docs/methods.md)")


def mammi_threshold(lo, hi, percentile: float, precision: str = "default"):
    """``tau = hi - (hi - lo) * (1 - p/100)``; the comparison ``a > tau`` is strict and made in float32
    (an activation exactly on ``tau`` is *not* representative).

    ``default``: computed in the dtype of ``lo``/``hi`` (float32 for dissectkit's activations).
    ``published``: as the published code computes it under numpy 1.26 - ``hi - lo`` in float32 (two
    float32 scalars), then ``hi - interval * (1 - p/100)`` in float64 (a float32 scalar times a Python
    float is float64 there), rounded to float32 for the comparison with the float32 activations
    (numpy 1.x compares an array with a scalar of the same kind in the array's dtype)."""
    if precision == "published":
        interval = hi - lo
        return (hi.double() - interval.double() * (1.0 - percentile / 100.0)).to(hi.dtype)
    return hi - (hi - lo) * (1.0 - percentile / 100.0)


def mammi_scores(A, V, T, t0, percentile: float, precision: str = "default"):
    """``S[K, C] = sum_{i in R_k} (cos(v_i, t_c) - cos(v_i, t_0))`` and the set sizes ``|R_k|``, in two
    streamed passes over ``A`` (a tensor or an ``ActivationStream``)."""

    stream = A if isinstance(A, ActivationStream) else ActivationStream.from_tensor(A, device=V.device)
    m = stream.moments
    tau = mammi_threshold(m.min, m.max, percentile, precision)  # float32, like the activations
    Vn = unit_rows(V)
    acc = None
    sizes = None
    for s, Ab in stream.blocks():
        R = Ab > tau  # [n, K]
        part = (R.to(Vn.dtype).T @ Vn[s : s + Ab.shape[0]]).double()
        cnt = R.sum(0)
        acc = part if acc is None else acc.add_(part)
        sizes = cnt if sizes is None else sizes.add_(cnt)
    D = T - t0.unsqueeze(0)  # [C, D]
    return acc.float() @ D.T, sizes


class Mammi(Method):
    name = "mammi"

    def __init__(self, params: MammiParams, ctx: Any) -> None:
        if "{}" not in params.template:
            raise EvidenceError(
                f"mammi template {params.template!r} has no '{{}}' placeholder for the concept."
            )
        self.params = params
        self.device = getattr(ctx, "device", "cpu")

    def label_resampled(self, evidence: Evidence, labels: LayerLabels, resamples: Any) -> Any:
        """Labels under bootstrap resamples of the probe, for label stability (``dissectkit.builtin.methods._resampled``)."""
        from dissectkit.builtin.methods._resampled import mammi_resampled

        return mammi_resampled(self, evidence, labels, resamples, mammi_scores, mammi_threshold)

    def label(self, evidence: Evidence) -> LayerLabels:
        device = device_of(self, evidence)
        A, V = checked_inputs(evidence, device)
        names = evidence.concept_texts
        tpl = self.params.template
        emb = encode(evidence, [tpl.format(c) for c in names] + [tpl.format("").strip()], device)
        S, _ = mammi_scores(A, V, emb[:-1], emb[-1], self.params.percentile, self.params.precision)
        tolerance = TOLERANCE_FACTOR * UNIT_ROUNDOFF * math.sqrt(A.n_images + emb.shape[1]) * float(S.abs().max())
        S = S.double().cpu()
        second = S.topk(2, dim=1).values[:, 1] if S.shape[1] > 1 else None
        neurons: list[list[tuple[str, float]]] = []
        reasons: dict[int, str] = {}
        runner_up: dict[int, float] = {}
        for k, row in enumerate(S):
            best = float(row.max())
            if best <= 0:
                neurons.append([])
                reasons[k] = "no_match"
                continue
            keep = (row > self.params.beta * best).nonzero().flatten()
            vals = row[keep]
            order = keep[vals.argsort(descending=True, stable=True)]
            neurons.append([(names[j], float(row[j])) for j in order.tolist()])
            if len(order) == 1 and second is not None:
                runner_up[k] = float(second[k])
        reasons.update(blank_dead(neurons, A.dead.cpu()))
        for k in reasons:
            runner_up.pop(k, None)
        return LayerLabels(
            layer=evidence.layer, method=self.name, params=self.params.model_dump(), neurons=neurons, reasons=reasons,
            tolerance=tolerance, runner_up=runner_up,
        )
