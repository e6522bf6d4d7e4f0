"""The ``mammo-clip`` dissector."""

from __future__ import annotations

from typing import Any

from dissectkit.plugin import (
    BuildContext,
    TorchDissectorBase,
    WeightsError,
    digest,
    file_fingerprint,
    load_state_dict_strict,
    load_tokenizer,
    resolve_weights,
)

from . import checkpoint, model

DEFAULT_TOKENIZER = "emilyalsentzer/Bio_ClinicalBERT"


class MammoClipParams(checkpoint.WeightsParams):
    """``weights``: the pretrained checkpoint (``{hf: shawn24/Mammo-CLIP, file: Pre-trained-checkpoints/
    b5-model-best-epoch-7.tar}`` or ``{path: ...}``); ``tokenizer``: hub id or local directory."""

    tokenizer: str = DEFAULT_TOKENIZER
    max_length: int = 256
    text_batch_size: int = 256
    autocast: bool = False


class MammoClipDissector(TorchDissectorBase):
    def __init__(self, params: MammoClipParams, ctx: BuildContext) -> None:
        path, self.tokenizer = self._files(params, ctx)
        path, sd, config = checkpoint.read(params, ctx, "Mammo-CLIP checkpoint", path=path)
        self.variant = model.detect_variant(sd, config, params.variant, what=f"Mammo-CLIP checkpoint {path}")
        net = model.build_mammo_clip(sd, self.variant)
        load_state_dict_strict(net, sd, what=f"Mammo-CLIP checkpoint {path}", ignore=model.IGNORED)
        del sd
        self.model = net.eval()
        self.image_size = tuple(params.image_size)
        self.conversion = params.conversion
        self.max_length = params.max_length
        self.text_batch_size = params.text_batch_size
        self.amp = params.autocast
        self.embed_dim = int(net.image_projection.projection.out_features)
        self.to(ctx.device)
        self._fingerprint = digest(
            "mammo-clip", file_fingerprint(path, ctx), params.tokenizer, self.image_size, self.max_length,
            model.MEAN, model.STD, *((self.conversion,) if self.conversion != "none" else ()),
        )

    @staticmethod
    def _files(params: MammoClipParams, ctx: BuildContext):
        """Resolve the checkpoint and the tokenizer, reporting every missing one at once."""
        errors, path, tokenizer = [], None, None
        try:
            path = resolve_weights(params.weights, ctx, what="Mammo-CLIP checkpoint")
        except WeightsError as exc:
            errors.append(str(exc))
        try:
            tokenizer = load_tokenizer(params.tokenizer, ctx, what="Mammo-CLIP tokenizer (Bio_ClinicalBERT)")
        except WeightsError as exc:
            errors.append(str(exc))
        if errors:
            raise WeightsError("\n    ".join(errors))
        return path, tokenizer

    def preprocess(self, image: Any):
        return model.preprocess_mammogram(image, self.image_size, self.conversion)

    def _image_features(self, images):
        return self.model.embed_images(images)

    def _text_features(self, texts: list[str]):
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt")
        return self.model.embed_texts(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    def fingerprint(self) -> str:
        return self._fingerprint


def make_mammo_clip(params: MammoClipParams, ctx: BuildContext) -> MammoClipDissector:
    return MammoClipDissector(params, ctx)
