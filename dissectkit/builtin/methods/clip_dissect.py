"""The CLIP-Dissect method: a similarity function of ``P = I T^T`` and the activations."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from dissectkit.base.contract import Method
from dissectkit.base.params import Params
from dissectkit.builtin.methods._common import (
    apply_template,
    blank_dead,
    checked_inputs,
    device_of,
    encode,
    top_m_lists,
    unit_rows,
)
from dissectkit.labelling.evidence import Evidence, LayerLabels


class ClipDissectParams(Params):
    similarity: str = "soft_wpmi"
    similarity_params: dict[str, Any] = Field(default_factory=dict)
    top_m: int = Field(5, ge=1)
    template: str | None = None

    @model_validator(mode="after")
    def _check_similarity(self) -> ClipDissectParams:
        from dissectkit.host.manager import get_host

        spec = get_host().registry.get("similarity", self.similarity)
        spec.validate(self.similarity_params, where="similarity")
        return self


class ClipDissect(Method):
    name = "clip-dissect"

    def __init__(self, params: ClipDissectParams, ctx: Any) -> None:
        from dissectkit.host.manager import get_host

        self.params = params
        self.ctx = ctx
        self.device = getattr(ctx, "device", "cpu")
        spec = get_host().registry.get("similarity", params.similarity)
        self.similarity = spec.build(spec.validate(params.similarity_params, where="similarity"), ctx)

    def label_resampled(self, evidence: Evidence, labels: LayerLabels, resamples: Any) -> Any:
        """Labels under bootstrap resamples of the probe, for label stability (``dissectkit.builtin.methods._resampled``)."""
        from dissectkit.builtin.methods._resampled import clip_dissect_resampled

        return clip_dissect_resampled(self, evidence, labels, resamples)

    def label(self, evidence: Evidence) -> LayerLabels:
        device = device_of(self, evidence)
        A, V = checked_inputs(evidence, device)
        names = evidence.concept_texts
        T = encode(evidence, apply_template(self.params.template, names), device)
        V = unit_rows(V)
        S = self.similarity.from_embeddings(V, T, A)  # every similarity streams the activations
        neurons = top_m_lists(S, names, self.params.top_m)
        reasons = blank_dead(neurons, A.dead)
        return LayerLabels(
            layer=evidence.layer, method=self.name, params=self.params.model_dump(), neurons=neurons, reasons=reasons
        )
