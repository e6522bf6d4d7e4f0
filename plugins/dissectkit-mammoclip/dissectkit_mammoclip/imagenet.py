"""The Mammo-CLIP Dissect study's G model: the Mammo-CLIP image-encoder architecture (the lukemelas
``efficientnet-b5``, modules ``_blocks.<i>`` like M and C) with the ImageNet weights of the TensorFlow
AutoAugment B5 checkpoint, fed Mammo-CLIP's preprocessing (docs/dissectors.md, "mammo-clip-imagenet").

The weights come from timm's port of that checkpoint (``timm/tf_efficientnet_b5.aa_in1k``), renamed key
for key into efficientnet_pytorch's names (:func:`timm_to_efficientnet`), or from efficientnet_pytorch's
own file (``efficientnet-b5-b6417697.pth``), which already has those names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from dissectkit.plugin import (
    BuildContext,
    LayerInfo,
    WeightsError,
    WeightsRef,
    digest,
    extract_state_dict,
    file_fingerprint,
    load_checkpoint,
    load_state_dict_strict,
    resolve_weights,
)

from . import checkpoint, model

TIMM_WEIGHTS = {"b5": "timm/tf_efficientnet_b5.aa_in1k", "b2": "timm/tf_efficientnet_b2.aa_in1k"}

# timm's names of a block's modules -> efficientnet_pytorch's; depthwise-separable blocks (timm's
# first stage: no expansion) and inverted-residual blocks name their batch norms differently
_DS = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand",
       "conv_pw": "_project_conv", "bn2": "_bn2"}
_IR = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
       "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand", "conv_pwl": "_project_conv", "bn3": "_bn2"}
_TOP = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_PARAM = re.compile(r"^(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def timm_to_efficientnet(sd: dict[str, Any]) -> dict[str, Any]:
    """A timm ``tf_efficientnet_*`` state dict renamed key for key into efficientnet_pytorch's names
    (``blocks.<stage>.<i>.*`` -> ``_blocks.<n>.*``, ``n`` counting the blocks in network order). Every
    tensor is mapped or a ``WeightsError`` names the ones that are not; tensors are not copied."""
    blocks = sorted({(int(m.group(1)), int(m.group(2))) for k in sd if (m := _BLOCK.match(k))})
    number = {b: n for n, b in enumerate(blocks)}
    inverted = {b for b in blocks if f"blocks.{b[0]}.{b[1]}.conv_pwl.weight" in sd}
    out: dict[str, Any] = {}
    unmapped = []
    for key, value in sd.items():
        m = _BLOCK.match(key)
        if m:
            b = (int(m.group(1)), int(m.group(2)))
            name = (_IR if b in inverted else _DS).get(m.group(3))
            new = f"_blocks.{number[b]}.{name}.{m.group(4)}" if name else None
        else:
            t = _PARAM.match(key)
            name = _TOP.get(t.group(1)) if t else None
            new = f"{name}.{t.group(2)}" if name and t else None
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    if unmapped:
        raise WeightsError(f"{len(unmapped)} tensor(s) of the timm state dict have no efficientnet_pytorch name: "
                           f"{', '.join(unmapped[:5])}. Is it a timm tf_efficientnet checkpoint?")
    return out


def is_timm(sd: dict[str, Any]) -> bool:
    return "conv_stem.weight" in sd


class ImageNetParams(checkpoint.ImageParams):
    """``weights``: timm's ``tf_efficientnet_b5.aa_in1k`` (default) or efficientnet_pytorch's
    ``efficientnet-b5-b6417697.pth``; ``padding``: ``static`` (efficientnet_pytorch's "same" padding
    computed for the nominal input, 456 for B5, as the published G and M / C) or ``dynamic`` (computed
    per input, as TensorFlow and timm)."""

    weights: WeightsRef | None = None  # None: timm's tf_efficientnet_<variant>.aa_in1k
    variant: Literal["b5", "b2"] = "b5"
    padding: Literal["static", "dynamic"] = "static"

    @model_validator(mode="before")
    @classmethod
    def _default_weights(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("weights") is None:  # filled in: validate / run name the file
            variant = str(data.get("variant") or "b5").lower()
            data = {**data, "weights": {"hf": TIMM_WEIGHTS.get(variant, TIMM_WEIGHTS["b5"]), "file": "model.safetensors"}}
        return data

    def weights_ref(self) -> Any:
        return self.weights


def build_encoder(variant: str, padding: str, sd: dict[str, Any] | None = None):
    """efficientnet_pytorch's ``EfficientNet`` (no download) with its ``_fc`` sized from ``sd``;
    ``padding="dynamic"`` computes TF "same" padding per input (``image_size=None``)."""
    from efficientnet_pytorch import EfficientNet
    from torch import nn

    override = {"image_size": None} if padding == "dynamic" else {}
    net = EfficientNet.from_name(model.VARIANTS[variant][0], **override)
    fc = (sd or {}).get("_fc.weight")
    net._fc = nn.Linear(fc.shape[1], fc.shape[0], bias="_fc.bias" in (sd or {})) if fc is not None else nn.Identity()
    return net


def load_state_dict(path: Path, trust: bool) -> dict[str, Any]:
    """The efficientnet_pytorch state dict of a timm or an efficientnet_pytorch file."""
    sd = extract_state_dict(load_checkpoint(path, trust=trust, what=f"ImageNet EfficientNet {path.name}"),
                            what=f"ImageNet EfficientNet {path}")
    return timm_to_efficientnet(sd) if is_timm(sd) else sd


class ImageNetEncoder(checkpoint.LazyTarget):
    """G: ``module.image_encoder`` is the ImageNet EfficientNet; ``module(x)`` gives its ImageNet logits;
    the layers are ``image_encoder._blocks.<i>``."""

    def __init__(self, params: ImageNetParams, ctx: BuildContext) -> None:
        self.params = params
        self.ctx = ctx
        self.image_size = tuple(params.image_size)
        self.device = ctx.device
        self._module = None
        self._fingerprint: str | None = None

    def _load(self) -> None:
        from torch import nn

        path = resolve_weights(self.params.weights_ref(), self.ctx, what="ImageNet EfficientNet weights")
        sd = load_state_dict(path, self.params.trust_checkpoint)
        variant = model.variant_from_state_dict(sd, prefix="")
        if variant != self.params.variant:
            raise WeightsError(f"ImageNet EfficientNet {path}: `variant: {self.params.variant}` but the weights are {variant}.")

        class ImageNetEffNet(nn.Module):
            def __init__(self, encoder: nn.Module) -> None:
                super().__init__()
                self.image_encoder = encoder

            def forward(self, x):
                return self.image_encoder(x)

        encoder = build_encoder(variant, self.params.padding, sd)
        load_state_dict_strict(encoder, sd, what=f"ImageNet EfficientNet {path}")
        self._module = ImageNetEffNet(encoder).eval().to(self.device)

    def layers(self) -> list[LayerInfo]:
        return model.block_layer_infos(self.params.variant, self.image_size, padding=self.params.padding)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            path = resolve_weights(self.params.weights_ref(), self.ctx, what="ImageNet EfficientNet weights")
            self._fingerprint = digest(
                "mammo-clip-imagenet", self.params.variant, self.params.padding, file_fingerprint(path, self.ctx),
                self.image_size, model.MEAN, model.STD,
                *((self.params.conversion,) if self.params.conversion != "none" else ()),
            )
        return self._fingerprint


def make_imagenet_encoder(params: ImageNetParams, ctx: BuildContext) -> ImageNetEncoder:
    return ImageNetEncoder(params, ctx)
