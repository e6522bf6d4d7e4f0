"""The synthetic mammography world's components (``synth-mammo``, ``synth-clip``, ``synth-effnet-*``,
``synth-mammo-concepts``); torch and timm load inside the factories."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

from dissectkit.base import weights
from dissectkit.base.errors import WeightsError, did_you_mean
from dissectkit.base.params import Params
from dissectkit.base.weights import WeightsRef
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register

LICENCE = "Apache-2.0 (first-party weights trained by `dissectkit synth train`)"


class SynthMammoParams(Params):
    """``n`` images from generator ``seed`` at ``height`` x ``width``; ``frequencies`` overrides the
    probability of each finding (keys: ``mass`` and the other finding names); ``indices``: serve these
    generator items in this order instead of ``0..n-1`` (``n`` is then ignored)."""

    n: int = Field(default=1000, ge=1, le=10_000_000)
    seed: int = 0
    height: int = Field(default=320, ge=32)
    width: int = Field(default=192, ge=24)
    frequencies: dict[str, float] = Field(default_factory=dict)
    label_noise: float = Field(default=0.05, ge=0.0, le=0.5)
    indices: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)

    @field_validator("frequencies")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        from dissectkit.synthetic.vocab import DEFAULT_FREQUENCIES

        for key, p in v.items():
            if key not in DEFAULT_FREQUENCIES:
                raise ValueError(f"unknown finding {key!r}.{did_you_mean(key, DEFAULT_FREQUENCIES)} "
                                 f"Known: {', '.join(DEFAULT_FREQUENCIES)}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"frequency of {key!r} must lie in [0, 1], got {p}")
        return v


class ModelParams(Params):
    """``weights``: override the packaged file (``{path}`` | ``{hf, file}`` | ``{url, sha256}``)."""

    weights: WeightsRef | None = None


class PlantedParams(ModelParams):
    """``unplanted``: channels of the planted layer that are seeded random projections (no concept);
    ``seed``: their seed."""

    unplanted: int = Field(default=12, ge=0, le=4096)
    seed: int = 0


class SynthConceptParams(Params):
    """Groups to include: ``findings`` (the ground-truth names), ``synonyms``, ``birads`` (the
    mammography terms of ``mammo-birads``) and ``distractors`` (everyday words)."""

    groups: list[str] = Field(default_factory=lambda: ["findings", "synonyms", "birads", "distractors"])

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        allowed = ("findings", "synonyms", "birads", "distractors")
        for g in v:
            if g not in allowed:
                raise ValueError(f"unknown group {g!r}.{did_you_mean(g, allowed)} Groups: {', '.join(allowed)}")
        if not v:
            raise ValueError("give at least one group")
        return v


@hookimpl
def dissectkit_register_probes(register: Register) -> None:
    register("synth-mammo", _make_probe, params=SynthMammoParams,
                 description="synthetic mammograms with per-finding masks, labels and reports (offline, ground truth)",
                 licence="Apache-2.0", has_masks=True)


@hookimpl
def dissectkit_register_dissectors(register: Register) -> None:
    register("synth-clip", _make_clip, params=ModelParams,
                 description="first-party CLIP trained on synthetic mammograms and their reports (offline)",
                 licence=LICENCE)


@hookimpl
def dissectkit_register_targets(register: Register) -> None:
    for name, what in (
        ("synth-effnet-concepts", "multi-label finding + composition classifier (known output-layer truth)"),
        ("synth-effnet-malignancy", "the concepts backbone fine-tuned for malignancy"),
        ("synth-effnet-general", "same architecture trained on synthetic shapes (general-data regime)"),
    ):
        register(name, _target_factory(name), params=ModelParams,
                     description=f"tinynet_e (timm EfficientNet): {what}", licence=LICENCE,
                     layers=_target_layers(name))
    register("synth-effnet-planted", _make_planted, params=PlantedParams,
             description="synth-effnet-concepts plus layer 'planted': one class activation map per finding and "
             "composition class (known truth) and random channels", licence=LICENCE, layers=_planted_layers)


@hookimpl
def dissectkit_register_concept_sets(register: Register) -> None:
    register("synth-mammo-concepts", _make_concepts, params=SynthConceptParams,
                 description="synthetic-world findings, their synonyms, BI-RADS terms and everyday distractors")


def _make_probe(params: SynthMammoParams, ctx: Any):
    from dissectkit.synthetic.probe import SynthMammoProbe

    return SynthMammoProbe(n=params.n, seed=params.seed, size=(params.height, params.width),
                           frequencies=dict(params.frequencies), label_noise=params.label_noise,
                           indices=params.indices)


def _make_clip(params: ModelParams, ctx: Any):
    from dissectkit.synthetic.components import SynthClip

    return SynthClip(params.weights, ctx)


def _target_factory(name: str):
    def make(params: ModelParams, ctx: Any):
        from dissectkit.synthetic.components import SynthEffnetTarget

        return SynthEffnetTarget(name, params.weights, ctx)

    return make


def _target_layers(name: str):
    def layers(params: ModelParams, ctx: Any):
        """The layers from the packaged table and the weights' config: no torch, no weights read."""
        from dissectkit.synthetic import arch

        return arch.effnet_layers(arch.n_outputs(arch.target_classes(name, _config_of(params.weights, ctx))))

    return layers


def _make_planted(params: PlantedParams, ctx: Any):
    from dissectkit.synthetic.planted import SynthEffnetPlanted

    return SynthEffnetPlanted(params.weights, ctx, params.unplanted, params.seed)


def _planted_layers(params: PlantedParams, ctx: Any):
    """The concepts target's layers and ``planted`` (no torch, no weights read)."""
    from dissectkit.base.types import LayerInfo
    from dissectkit.synthetic import arch

    n_out = arch.n_outputs(arch.target_classes("synth-effnet-concepts", _config_of(params.weights, ctx)))
    layers = arch.effnet_layers(n_out)
    shape = next(info.shape for info in layers if info.name == "bn2")
    assert shape is not None
    k = n_out + params.unplanted
    return [*layers, LayerInfo("planted", k, "conv", (k, *shape[1:]))]


def _config_of(ref: Any, ctx: Any) -> dict[str, Any]:
    """The synthetic-world config that goes with a weights ref, found without downloading or reading
    the weights: next to the local file (or where a missing local file should be), else the packaged one."""
    from dissectkit.synthetic import arch

    if ref is None:
        return arch.read_config()
    try:
        path = weights.resolve(ref, replace(ctx, offline=True))
    except WeightsError:
        if not isinstance(ref, weights.PathRef):
            return arch.read_config()
        path = Path(ref.path).expanduser()
    return arch.weights_config(path)


def _make_concepts(params: SynthConceptParams, ctx: Any):
    from dissectkit.synthetic.concepts import synth_concepts

    return synth_concepts(params.groups)
