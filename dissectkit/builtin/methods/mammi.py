"""The MAMMI method: adaptive representative images and template-relative cosine matching."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dissectkit.builtin.methods._common import checked_inputs, device_of, encode
from dissectkit.errors import EvidenceError
from dissectkit.methods import Evidence, LayerLabels
from dissectkit.registry import Params


class MammiParams(Params):
    percentile: float = Field(93.0, ge=0, le=100)
    beta: float = Field(0.95, ge=0, le=1)
    template: str = "A chest x-ray image of a {}"


def mammi_scores(A, V, T, t0, percentile: float):
    """``S[K, C] = sum_{i in R_k} (cos(v_i, t_c) - cos(v_i, t_0))`` and the set sizes ``|R_k|``."""
    import torch

    A64 = A.double()
    lo = A64.min(0).values
    hi = A64.max(0).values
    tau = hi - (hi - lo) * (1.0 - percentile / 100.0)
    R = (A64 - tau > 0).to(V.dtype)  # [N, K]
    D = T - t0.unsqueeze(0)  # [C, D]
    S = (R.T @ torch.nn.functional.normalize(V, dim=1)) @ D.T
    return S, R.sum(0)


class Mammi:
    name = "mammi"
    needs_masks = False

    def __init__(self, params: MammiParams, ctx: Any) -> None:
        if "{}" not in params.template:
            raise EvidenceError(
                f"mammi template {params.template!r} has no '{{}}' placeholder for the concept."
            )
        self.params = params
        self.device = getattr(ctx, "device", "cpu")

    def label(self, evidence: Evidence) -> LayerLabels:
        device = device_of(self, evidence)
        A, V = checked_inputs(evidence, device)
        names = evidence.concept_texts
        tpl = self.params.template
        emb = encode(evidence, [tpl.format(c) for c in names] + [tpl.format("").strip()], device)
        S, _ = mammi_scores(A, V, emb[:-1], emb[-1], self.params.percentile)
        S = S.double().cpu()
        neurons: list[list[tuple[str, float]]] = []
        for row in S:
            best = float(row.max())
            if best <= 0:
                neurons.append([])
                continue
            keep = (row > self.params.beta * best).nonzero().flatten()
            vals = row[keep]
            order = keep[vals.argsort(descending=True, stable=True)]
            neurons.append([(names[j], float(row[j])) for j in order.tolist()])
        return LayerLabels(
            layer=evidence.layer, method=self.name, params=self.params.model_dump(), neurons=neurons
        )


def make_mammi(params: MammiParams, ctx: Any) -> Mammi:
    return Mammi(params, ctx)
