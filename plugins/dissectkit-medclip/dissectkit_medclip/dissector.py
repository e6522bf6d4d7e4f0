"""The ``medclip`` dissector."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator

from dissectkit.plugin import (
    BuildContext,
    Params,
    TorchDissectorBase,
    WeightsError,
    WeightsRef,
    digest,
    extract_state_dict,
    file_fingerprint,
    load_checkpoint,
    load_state_dict_strict,
    load_tokenizer,
    resolve_weights,
)

from . import model

WEIGHTS_FILE = "pytorch_model.bin"


class MedClipParams(Params):
    """``weights``: ``pytorch_model.bin`` or the unpacked release directory holding it;
    ``variant``: ``vit`` | ``resnet`` (omitted: read from the weights)."""

    weights: WeightsRef
    variant: Literal["vit", "resnet"] | None = None
    tokenizer: str = "emilyalsentzer/Bio_ClinicalBERT"
    trust_checkpoint: bool = False
    max_length: int = 77
    text_batch_size: int = 256
    autocast: bool = False

    @field_validator("weights", mode="before")
    @classmethod
    def _path_string(cls, value: Any) -> Any:
        return {"path": str(value)} if isinstance(value, str | Path) else value


def weights_file(path: Path) -> Path:
    if path.is_dir():
        hits = [path / WEIGHTS_FILE, *sorted(path.rglob(WEIGHTS_FILE))]
        found = next((p for p in hits if p.is_file()), None)
        if found is None:
            raise WeightsError(f"MedCLIP weights directory {path} holds no {WEIGHTS_FILE}; unzip the release into it.")
        return found
    return path


class MedClipDissector(TorchDissectorBase):
    def __init__(self, params: MedClipParams, ctx: BuildContext) -> None:
        path = weights_file(resolve_weights(params.weights, ctx, what="MedCLIP weights"))
        what = f"MedCLIP weights {path}"
        sd = extract_state_dict(load_checkpoint(path, trust=params.trust_checkpoint, what=what), what=what)
        sd = model.modernize_swin_keys(sd)
        self.variant = model.detect_variant(sd, params.variant, what)
        self.tokenizer = load_tokenizer(params.tokenizer, ctx, what="MedCLIP tokenizer (Bio_ClinicalBERT)")
        net = model.build_medclip(sd, self.variant)
        load_state_dict_strict(net, sd, what=what, ignore=model.IGNORED)
        self.model = net.eval()
        self.max_length = params.max_length
        self.text_batch_size = params.text_batch_size
        self.amp = params.autocast
        self.embed_dim = int(net.text_model.projection_head.out_features)
        self.to(ctx.device)
        self._fingerprint = digest(
            "medclip", self.variant, file_fingerprint(path, ctx), params.tokenizer, self.max_length, model.MEAN, model.STD
        )

    def preprocess(self, image: Any):
        return model.preprocess_medclip(image)

    def _image_features(self, images):
        return self.model.vision_model(images)

    def _text_features(self, texts: list[str]):
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt")
        return self.model.text_model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    def fingerprint(self) -> str:
        return self._fingerprint


def make_medclip(params: MedClipParams, ctx: BuildContext) -> MedClipDissector:
    return MedClipDissector(params, ctx)
