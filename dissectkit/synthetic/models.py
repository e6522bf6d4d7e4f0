"""The first-party models of the synthetic world: ``synth-clip`` and the EfficientNet targets.

This module imports torch (timm only inside :func:`build_effnet`); it is imported lazily by the
component factories. The targets run as :func:`build_tinynet`, a plain-torch copy of timm's
``tinynet_e`` (same modules, names, parameters and operations, so the same numbers), because
importing timm (which imports torchvision and ``torch._dynamo``) costs more than a run's
extraction of a few hundred images; training and the layer table use timm itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dissectkit.base.types import LayerInfo
from dissectkit.imaging.raw import as_array, gray_or_rgb, minmax_unit
from dissectkit.synthetic.arch import (  # noqa: F401 - re-exported: the world's torch-free facts
    CLASSIFIER,
    CONFIG_FILE,
    LAYER_TABLE,
    MODEL_INPUT,
    TARGET_ARCH,
    WEIGHTS_DIR,
    read_config,
)

PIXEL_MEAN = 0.25  # one scalar for all channels, after per-image min-max scaling (Mammo-CLIP style)
PIXEL_STD = 0.25


def prepare_batch(images: np.ndarray | torch.Tensor, size: tuple[int, int] = MODEL_INPUT) -> torch.Tensor:
    """``[B, H, W]`` images already min-max scaled to [0, 1] -> normalised ``[B, 3, h, w]`` float32."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32) if not isinstance(images, torch.Tensor) else images)
    x = x.float()[:, None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="area")
    x = (x - PIXEL_MEAN) / PIXEL_STD
    return x.expand(-1, 3, -1, -1).contiguous()


def preprocess_image(image: Any, size: tuple[int, int] = MODEL_INPUT, model: str | None = "synth-clip / synth-effnet") -> torch.Tensor:
    """One raw image (PIL or HxW / HxWxC uint8/uint16/float) -> ``[3, h, w]``: gray, min-max, area resize
    (a constant image gets the almost-constant warning, naming ``model``)."""
    arr = as_array(image)
    if arr.ndim == 3:
        arr = gray_or_rgb(arr.astype(np.float32), channels=1)
    return prepare_batch(minmax_unit(arr, model)[None], size)[0]


class ImageEncoder(nn.Module):
    """A small CNN: a 4 x 4 patch stem, strided conv stages, then mean- and max-pooled features -> D."""

    def __init__(self, widths: tuple[int, ...] = (32, 48, 96, 160), embed_dim: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 4, stride=4, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        c_in = widths[0]
        for i, c in enumerate(widths):
            layers += [
                nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c_in, 256), nn.GELU(), nn.Linear(256, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1))


class TextEncoder(nn.Module):
    """Bag of hashed features -> mean embedding -> MLP -> D."""

    def __init__(self, buckets: int = 8192, width: int = 192, embed_dim: int = 128) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets, width, mode="mean")
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 256), nn.GELU(), nn.Linear(256, embed_dim))

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(ids, offsets))


class SynthClipModel(nn.Module):
    """Image and text towers with a learnable logit scale (CLIP)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        d = int(config["embed_dim"])
        self.image_encoder = ImageEncoder(tuple(config["image_widths"]), d)
        self.text_encoder = TextEncoder(int(config["buckets"]), int(config["text_width"]), d)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(x), dim=-1)

    def encode_text(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(ids, offsets), dim=-1)


# ngrams: character n-gram lengths of the hashing tokenizer (no 3-grams: short everyday words shared
# too many of them with the findings' words)
CLIP_CONFIG: dict[str, Any] = {"embed_dim": 128, "image_widths": [32, 48, 96, 160], "buckets": 4096, "text_width": 128,
                               "ngrams": [4, 5]}


def build_tokenizer(config: dict[str, Any] | None = None):
    """The hashing tokenizer of a synth-clip config (configs without ``ngrams`` used 3 to 5)."""
    from dissectkit.synthetic.text import HashTokenizer

    config = config or CLIP_CONFIG
    return HashTokenizer(int(config["buckets"]), tuple(int(n) for n in config.get("ngrams", (3, 4, 5))))


def build_clip(config: dict[str, Any] | None = None) -> SynthClipModel:
    return SynthClipModel(config or CLIP_CONFIG)


def build_effnet(num_classes: int) -> nn.Module:
    """The targets' architecture: timm ``tinynet_e`` (EfficientNet family), random init, no download."""
    import timm

    return timm.create_model(TARGET_ARCH, pretrained=False, num_classes=num_classes)


# tinynet_e at timm's defaults: per stage, per block (kind, in, out, expanded, kernel, stride, squeeze);
# "ds": depthwise-separable block, "ir": inverted residual. A block adds its input when in == out and stride 1.
_STEM, _HEAD = 32, 1280
_TINYNET_E: tuple[tuple[tuple[str, int, int, int, int, int, int], ...], ...] = (
    (("ds", 32, 8, 32, 3, 1, 8),),
    (("ir", 8, 16, 48, 3, 2, 2),),
    (("ir", 16, 24, 96, 5, 2, 4),),
    (("ir", 24, 40, 144, 3, 2, 6), ("ir", 40, 40, 240, 3, 1, 10)),
    (("ir", 40, 56, 240, 5, 1, 10), ("ir", 56, 56, 336, 5, 1, 14)),
    (("ir", 56, 96, 336, 5, 2, 14), ("ir", 96, 96, 576, 5, 1, 24)),
    (("ir", 96, 160, 576, 3, 1, 24),),
)


class _BatchNormAct(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d``: batch norm, then ``drop`` (identity) and ``act``."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels)
        self.drop = nn.Identity()
        self.act: nn.Module = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


def _dw(channels: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, stride, padding=((stride - 1) + (kernel - 1)) // 2, groups=channels, bias=False)


class _DepthwiseSeparable(nn.Module):
    def __init__(self, c_in: int, c_out: int, _mid: int, kernel: int, stride: int, se: int) -> None:
        super().__init__()
        self.has_skip = c_in == c_out and stride == 1
        self.conv_dw = _dw(c_in, kernel, stride)
        self.bn1 = _BatchNormAct(c_in)
        self.aa = nn.Identity()
        self.se = _SqueezeExcite(c_in, se)
        self.conv_pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = _BatchNormAct(c_out, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.drop_path(y) + x if self.has_skip else y


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, mid: int, kernel: int, stride: int, se: int) -> None:
        super().__init__()
        self.has_skip = c_in == c_out and stride == 1
        self.conv_pw = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = _BatchNormAct(mid)
        self.conv_dw = _dw(mid, kernel, stride)
        self.bn2 = _BatchNormAct(mid)
        self.aa = nn.Identity()
        self.se = _SqueezeExcite(mid, se)
        self.conv_pwl = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = _BatchNormAct(c_out, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv_pwl(self.se(self.aa(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))))
        return self.drop_path(y) + x if self.has_skip else y


class _GlobalPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(x))


class TinyNetE(nn.Module):
    """timm's ``tinynet_e`` in plain torch (module names, parameters and forward pass alike; the
    tests check it against timm). Built for inference: initialise by loading a state dict."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, _STEM, 3, 2, padding=1, bias=False)
        self.bn1 = _BatchNormAct(_STEM)
        self.blocks = nn.Sequential(*(
            nn.Sequential(*((_DepthwiseSeparable if kind == "ds" else _InvertedResidual)(*spec) for kind, *spec in stage))
            for stage in _TINYNET_E
        ))
        self.conv_head = nn.Conv2d(_TINYNET_E[-1][-1][2], _HEAD, 1, bias=False)
        self.bn2 = _BatchNormAct(_HEAD)
        self.global_pool = _GlobalPool()
        self.classifier = nn.Linear(_HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(self.global_pool(x))


def build_tinynet(num_classes: int) -> nn.Module:
    """The targets' architecture without timm (:class:`TinyNetE`), for loading trained weights."""
    return TinyNetE(num_classes)


def effnet_layer_infos(num_classes: int, device: str = "meta") -> list[LayerInfo]:
    """The targets' layers measured on the built architecture: one forward pass of a zero image
    (on the meta device by default: no memory, no weights)."""
    from dissectkit.nn.layers import infer_layer_infos

    with torch.device(device):
        module = build_effnet(num_classes).eval()
        return infer_layer_infos(module, torch.zeros(1, 3, *MODEL_INPUT))


def write_layer_table() -> None:
    """Regenerate ``arch.LAYER_TABLE`` from the architecture (run after changing it or timm)."""
    infos = effnet_layer_infos(1)
    if infos[-1].name != CLASSIFIER:
        raise RuntimeError(f"{TARGET_ARCH}: expected {CLASSIFIER!r} to be the last layer, got {infos[-1].name!r}")
    rows = ",\n".join(json.dumps([i.name, list(i.shape or ())]) for i in infos[:-1])
    LAYER_TABLE.write_text(f'{{"arch": "{TARGET_ARCH}", "input": {list(MODEL_INPUT)}, "layers": [\n{rows}\n]}}\n')


def load_weights_into(module: nn.Module, path: Path, what: str) -> Path:
    """Read a resolved weights file once (safetensors or weights-only torch), cast, load strictly."""
    from dissectkit.base import weights

    sd = weights.extract_state_dict(weights.load_checkpoint(path, what=what), what=what)
    own = module.state_dict()
    sd = {k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}
    weights.load_state_dict_strict(module, sd, what=f"{what} ({path})")
    return path


def state_dict_fp16(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating tensors stored as float16 (the committed files stay small)."""
    return {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().cpu()
            for k, v in module.state_dict().items()}
