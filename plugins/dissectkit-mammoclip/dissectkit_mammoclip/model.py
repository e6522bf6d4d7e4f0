"""Mammo-CLIP architecture rebuilt from its checkpoint: EfficientNet-B2/B5 (lukemelas) image
encoder, BERT text encoder with EOS pooling, linear projections; preprocessing; layer listing."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from dissectkit.plugin import WeightsError, as_array, gray_or_rgb, warn_if_flat

# The published normalisation: mean as written in the released config, std to its 17 digits.
MEAN, STD = 0.3089279, 0.25053555408335154
DEFAULT_IMAGE_SIZE = (1520, 912)
# variant -> (efficientnet-pytorch name, feature width, number of blocks)
VARIANTS = {"b5": ("efficientnet-b5", 2048, 39), "b2": ("efficientnet-b2", 1408, 23)}
IMG = "image_encoder."
TXT = "text_encoder.text_encoder."
IGNORED = ("embeddings.position_ids",)


def variant_from_name(name: str | None) -> str | None:
    """``tf_efficientnet_b5_ns-detect`` -> b5; ``tf_efficientnetv2-detect`` (really B2) -> b2;
    also file names such as ``b5-model-best-epoch-7.tar``."""
    if not name:
        return None
    low = name.lower()
    if re.search(r"(^|[^a-z0-9])b5([^0-9]|$)|efficientnet[-_]?b5", low):
        return "b5"
    if re.search(r"(^|[^a-z0-9])b2([^0-9]|$)|efficientnet[-_]?b2|efficientnetv2", low):
        return "b2"
    return None


def variant_from_state_dict(sd: dict[str, Any], prefix: str = IMG) -> str:
    key = prefix + "_conv_head.weight"
    if key not in sd:
        raise WeightsError(f"checkpoint has no {key!r}: it is not a Mammo-CLIP EfficientNet image encoder.")
    width = int(sd[key].shape[0])
    for variant, (_, w, _n) in VARIANTS.items():
        if w == width:
            return variant
    raise WeightsError(f"{key} has {width} output channels; Mammo-CLIP uses 2048 (B5) or 1408 (B2).")


def detect_variant(sd: dict[str, Any], config: Any = None, requested: str | None = None, what: str = "checkpoint") -> str:
    """B2/B5 from ``config["model"]["image_encoder"]["name"]`` and the state-dict shapes (must agree)."""
    by_shape = variant_from_state_dict(sd)
    name = None
    if isinstance(config, dict):
        name = ((config.get("model") or {}).get("image_encoder") or {}).get("name")
    by_config = variant_from_name(name) if name else None
    for source, value in (("its config image_encoder.name " + repr(name), by_config), ("the `variant` parameter", requested)):
        if value is not None and value != by_shape:
            raise WeightsError(f"{what}: {source} says {value} but its weights have the shapes of {by_shape}.")
    return by_shape


def build_efficientnet(variant: str, sd: dict[str, Any] | None = None, prefix: str = IMG):
    """The lukemelas EfficientNet (static same padding for the nominal size), no download, no ``_fc``."""
    from efficientnet_pytorch import EfficientNet
    from torch import nn

    net = EfficientNet.from_name(VARIANTS[variant][0])
    fc_w = (sd or {}).get(prefix + "_fc.weight")
    net._fc = nn.Linear(fc_w.shape[1], fc_w.shape[0], bias=prefix + "_fc.bias" in sd) if fc_w is not None else nn.Identity()
    return net


def image_features(encoder, x):
    """``extract_features`` -> adaptive average pool -> flatten."""
    return encoder._avg_pooling(encoder.extract_features(x)).flatten(1)


def linear_from(sd: dict[str, Any], prefix: str):
    from torch import nn

    key = prefix + "weight"
    if key not in sd:
        raise WeightsError(f"checkpoint has no {key!r}.")
    out_f, in_f = sd[key].shape
    return nn.Linear(in_f, out_f, bias=prefix + "bias" in sd)


def build_mammo_clip(sd: dict[str, Any], variant: str):
    """The whole model with module names matching the released state dict."""
    import torch
    from torch import nn
    from transformers import BertModel

    from dissectkit.plugin import bert_config_from_state_dict

    class _Projection(nn.Module):
        def __init__(self, prefix: str) -> None:
            super().__init__()
            self.projection = linear_from(sd, prefix + "projection.")

    class _Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = bert_config_from_state_dict(sd, TXT)
            self.text_encoder = BertModel(config, add_pooling_layer=TXT + "pooler.dense.weight" in sd)

    class MammoClip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = build_efficientnet(variant, sd)
            self.text_encoder = _Text()
            self.image_projection = _Projection("image_projection.")
            self.text_projection = _Projection("text_projection.")
            if "logit_scale" in sd:
                self.logit_scale = nn.Parameter(torch.zeros(sd["logit_scale"].shape))

        def embed_images(self, x):
            return self.image_projection.projection(image_features(self.image_encoder, x))

        def embed_texts(self, input_ids, attention_mask):
            hidden = self.text_encoder.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            eos = attention_mask.sum(-1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos]
            return self.text_projection.projection(pooled)

    return MammoClip()


def preprocess_mammogram(image: Any, size: tuple[int, int], conversion: str = "none"):
    """A raw probe image -> ``Tensor[3, H, W]`` as Mammo-CLIP's evaluation reads its PNGs.

    ``conversion="mammo-clip"`` first makes the Mammo-CLIP PNG of a raw mammogram (its DICOM -> PNG
    conversion: border crop, min-max to 8 bits, ``ExtractBreast``, INTER_AREA to ``size``; see
    :mod:`dissectkit.imaging.mammo_png`); ``"none"`` takes the image as such a PNG already. Then: grey
    repeated to RGB, min-max to [0, 1] per image, INTER_AREA resize to ``size`` (H, W) only when it
    differs (the reference never resizes: its PNGs are already 1520 x 912; aspect ratio not kept),
    ``(x - 0.3089279) / 0.25053555408335154``."""
    import torch

    from dissectkit.plugin import mammo_clip_png, resize_area

    arr = as_array(image)
    if conversion == "mammo-clip":
        arr = mammo_clip_png(arr, size=size)
    arr = arr.astype(np.float32)  # grey stays one channel until the end: the same min and max as its RGB
    lo, hi = float(arr.min()), float(arr.max())
    if hi > lo:
        arr -= lo
        arr /= hi - lo
    else:
        arr[:] = 0.0
    warn_if_flat(arr, "dissector/target mammo-clip")
    arr = resize_area(arr, size)
    arr -= MEAN
    arr /= STD
    x = torch.from_numpy(np.ascontiguousarray(gray_or_rgb(arr, 3).transpose(2, 0, 1)))
    return x


def block_layer_infos(variant: str, size: tuple[int, int], prefix: str = IMG, padding: str = "static"):
    """``LayerInfo`` of every ``_blocks.<i>`` computed on the meta device: no weights, no memory
    (``padding="dynamic"``: TF "same" padding computed per input, the G target's option)."""
    import torch

    from dissectkit.plugin import info_from_shape

    with torch.device("meta"):
        if padding == "dynamic":
            from .imagenet import build_encoder

            net = build_encoder(variant, padding)
        else:
            net = build_efficientnet(variant)
        x = torch.empty(1, 3, *size)
    shapes: dict[int, tuple[int, ...]] = {}

    def hook(index: int):
        def fn(_m, _i, out):
            shapes[index] = tuple(out.shape[1:])

        return fn

    handles = [blk.register_forward_hook(hook(i)) for i, blk in enumerate(net._blocks)]
    try:
        with torch.no_grad():
            net.extract_features(x)
    finally:
        for h in handles:
            h.remove()
    return [info_from_shape(f"{prefix}_blocks.{i}", shapes[i]) for i in range(len(net._blocks))]
