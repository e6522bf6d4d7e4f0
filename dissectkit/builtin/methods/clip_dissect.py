"""The CLIP-Dissect method: a similarity function of ``P = I T^T`` and the activations."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from dissectkit.base.contract import Method
from dissectkit.base.params import Params, params_of
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
    similarity_params: Annotated[dict[str, Any], params_of("similarity", "similarity")] = Field(default_factory=dict)
    top_m: int = Field(5, ge=1)
    template: str | None = None
    precision: Literal["default", "published"] | None = Field(
        None, description="the similarity's arithmetic (its `precision` param; None: as similarity_params "
        "say, default). published: the published code's float32 loop, and constant neurons labelled as it "
        "labels them (docs/methods.md)")

    def similarity_settings(self) -> dict[str, Any]:
        """The similarity's params with ``precision`` applied."""
        settings = dict(self.similarity_params)
        if self.precision is not None:
            settings["precision"] = self.precision
        return settings

    @model_validator(mode="after")
    def _check_similarity(self) -> ClipDissectParams:
        from dissectkit.builtin.similarities import has_precision
        from dissectkit.host.manager import get_host

        spec = get_host().registry.get("similarity", self.similarity)
        given = self.similarity_params.get("precision")
        if self.precision is not None and given is not None and given != self.precision:
            raise ValueError(f"precision is {self.precision!r} but similarity_params.precision is {given!r}; set one of them")
        if self.precision is not None and not has_precision(spec.params):
            if self.precision == "published":
                raise ValueError(f"similarity {self.similarity!r} ({spec.origin}) has no published arithmetic; "
                                 "precision: published works with the built-in cos, cos3, wpmi, soft_wpmi and rank_reorder")
            return self
        spec.validate(self.similarity_settings(), where="similarity")
        return self

    @property
    def published(self) -> bool:
        return (self.precision or self.similarity_params.get("precision")) == "published"


class ClipDissect(Method):
    name = "clip-dissect"

    def __init__(self, params: ClipDissectParams, ctx: Any) -> None:
        from dissectkit.host.manager import get_host

        self.params = params
        self.ctx = ctx
        self.device = getattr(ctx, "device", "cpu")
        from dissectkit.builtin.similarities import has_precision

        spec = get_host().registry.get("similarity", params.similarity)
        settings = params.similarity_settings() if has_precision(spec.params) else dict(params.similarity_params)
        self.similarity = spec.build(spec.validate(settings, where="similarity"), ctx)

    def label_resampled(self, evidence: Evidence, labels: LayerLabels, resamples: Any) -> Any:
        """Labels under bootstrap resamples of the probe, for label stability (``dissectkit.builtin.methods._resampled``)."""
        from dissectkit.builtin.methods._resampled import clip_dissect_resampled

        return clip_dissect_resampled(self, evidence, labels, resamples)

    def label(self, evidence: Evidence) -> LayerLabels:
        import torch

        from dissectkit.builtin.similarities import score_tolerance

        device = device_of(self, evidence)
        A, V = checked_inputs(evidence, device)
        names = evidence.concept_texts
        T = encode(evidence, apply_template(self.params.template, names), device)
        # the published code normalises the embeddings itself (``_published_P``); the default keeps V
        V = V if self.params.published else unit_rows(V)
        S = self.similarity.from_embeddings(V, T, A)  # every similarity streams the activations
        runner_up: dict[int, float] = {}
        neurons = top_m_lists(S, names, self.params.top_m, runner_up)
        keep = torch.isfinite(S).all(1).cpu() if self.params.published else None
        reasons = blank_dead(neurons, A.dead.cpu(), keep)
        for k in reasons:
            if not neurons[k]:
                runner_up.pop(k, None)
        return LayerLabels(
            layer=evidence.layer, method=self.name, params=self.params.model_dump(), neurons=neurons,
            reasons=reasons, tolerance=score_tolerance(self.similarity, S, A.n_images), runner_up=runner_up,
        )
