"""MedCLIP architecture rebuilt from the weights: Swin (transformers ``SwinModel``) or ResNet-50
(torchvision) vision side, BERT text side with masked mean pooling over layers 1, 2 and last."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from dissectkit.plugin import WeightsError, to_pil

MEAN, STD = 0.5862786, 0.2795009
SIZE = 224
VISION = "vision_model."
TEXT = "text_model.model."
IGNORED = ("embeddings.position_ids", "relative_position_index")
# microsoft/swin-tiny-patch4-window7-224, written out so that nothing is downloaded
SWIN_TINY = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
             "patch_size": 4, "image_size": 224, "mlp_ratio": 4.0}


def detect_variant(sd: dict[str, Any], requested: str | None, what: str) -> str:
    found = "vit" if VISION + "projection_head.weight" in sd else "resnet" if VISION + "model.fc.weight" in sd else None
    if found is None:
        raise WeightsError(
            f"{what}: neither vision_model.projection_head.weight (ViT variant) nor vision_model.model.fc.weight "
            "(ResNet variant) is present; is this a MedCLIP pytorch_model.bin?"
        )
    if requested is not None and requested != found:
        raise WeightsError(f"{what}: `variant: {requested}` but the weights are those of the {found} variant.")
    return found


# MedCLIP's file was written by transformers 4.x; transformers 5 renamed Swin's attention/MLP weights.
SWIN_RENAMES = (
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.output.dense.", "attention.o_proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
)


@functools.cache
def swin_uses_new_names() -> bool:
    """Whether the installed transformers names Swin weights ``attention.q_proj`` (v5) or ``attention.self.query``."""
    from transformers import SwinConfig, SwinModel

    tiny = SwinModel(SwinConfig(embed_dim=8, depths=[1], num_heads=[1], image_size=32, window_size=2, patch_size=4))
    return any(".attention.q_proj." in k for k in tiny.state_dict())


def modernize_swin_keys(sd: dict[str, Any], prefix: str = VISION + "model.encoder.") -> dict[str, Any]:
    """Rename transformers-4 Swin keys to the installed transformers' names (no-op when they agree)."""
    if not swin_uses_new_names():
        return sd
    out = {}
    for key, value in sd.items():
        if key.startswith(prefix):
            for old, new in SWIN_RENAMES:
                if old in key:
                    key = key.replace(old, new)
                    break
        out[key] = value
    return out


def swin_config_from_state_dict(sd: dict[str, Any], prefix: str = VISION + "model."):
    """A ``SwinConfig`` matching the weights (swin-tiny for the released file)."""
    from transformers import SwinConfig

    cfg = dict(SWIN_TINY)
    proj = sd.get(prefix + "embeddings.patch_embeddings.projection.weight")
    if proj is not None:
        cfg["embed_dim"], cfg["patch_size"] = int(proj.shape[0]), int(proj.shape[2])
        stages = sorted({int(k[len(prefix):].split(".")[2]) for k in sd if k.startswith(prefix + "encoder.layers.")})
        depths, heads = [], []
        for s in stages:
            p = f"{prefix}encoder.layers.{s}.blocks."
            blocks = {int(k[len(p):].split(".")[0]) for k in sd if k.startswith(p)}
            depths.append(max(blocks) + 1)
            table = sd.get(f"{p}0.attention.relative_position_bias.relative_position_bias_table")
            if table is None:
                table = sd[f"{p}0.attention.self.relative_position_bias_table"]
            heads.append(int(table.shape[1]))
            cfg["window_size"] = (round(table.shape[0] ** 0.5) + 1) // 2
        cfg["depths"], cfg["num_heads"] = depths, heads
        fc = sd.get(f"{prefix}encoder.layers.0.blocks.0.mlp.fc1.weight")
        fc = fc if fc is not None else sd.get(f"{prefix}encoder.layers.0.blocks.0.intermediate.dense.weight")
        if fc is not None:
            cfg["mlp_ratio"] = fc.shape[0] / cfg["embed_dim"]
    return SwinConfig(**cfg)


def build_medclip(sd: dict[str, Any], variant: str):
    import torch
    from torch import nn
    from transformers import BertModel

    from dissectkit.plugin import bert_config_from_state_dict

    class VisionViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            from transformers import SwinModel

            self.model = SwinModel(swin_config_from_state_dict(sd))
            w = sd[VISION + "projection_head.weight"]
            self.projection_head = nn.Linear(w.shape[1], w.shape[0], bias=False)

        def forward(self, x):
            return self.projection_head(self.model(pixel_values=x).pooler_output)

    class VisionResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            from torchvision.models import resnet50

            self.model = resnet50(weights=None)
            w = sd.get(VISION + "model.fc.weight")
            self.model.fc = nn.Linear(2048, int(w.shape[0]) if w is not None else 512, bias=False)

        def forward(self, x):
            return self.model(x)

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = BertModel(bert_config_from_state_dict(sd, TEXT), add_pooling_layer=TEXT + "pooler.dense.weight" in sd)
            w = sd.get("text_model.projection_head.weight")
            if w is None:
                raise WeightsError("MedCLIP weights lack text_model.projection_head.weight.")
            self.projection_head = nn.Linear(w.shape[1], w.shape[0], bias=False)

        def forward(self, input_ids, attention_mask):
            states = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
            mask = attention_mask.unsqueeze(-1).to(states[-1].dtype)
            pooled = [(states[i] * mask).sum(1) / mask.sum(1).clamp_min(1) for i in (1, 2, -1)]
            return self.projection_head(torch.stack(pooled).mean(0))

    class MedClip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision_model = VisionViT() if variant == "vit" else VisionResNet()
            self.text_model = Text()
            if "logit_scale" in sd:
                self.logit_scale = nn.Parameter(torch.zeros(sd["logit_scale"].shape))

    return MedClip()


def preprocess_medclip(image: Any):
    """Greyscale; pad to a centred square of side max(224, w, h) with black; resize 224 bicubic;
    centre crop 224; /255; normalise (mean 0.5862786, std 0.2795009); repeat to 3 channels."""
    import torch
    from PIL import Image

    grey = to_pil(image, "L", model="dissector medclip")
    w, h = grey.size
    side = max(SIZE, w, h)
    square = Image.new("L", (side, side), 0)
    square.paste(grey, ((side - w) // 2, (side - h) // 2))
    square = square.resize((SIZE, SIZE), Image.BICUBIC)
    arr = np.asarray(square, dtype=np.float32) / 255.0
    x = torch.from_numpy((arr - MEAN) / STD)
    return x.unsqueeze(0).repeat(3, 1, 1)
