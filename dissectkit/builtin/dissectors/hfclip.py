"""``hf-clip``: transformers ``CLIPModel`` / ``SiglipModel`` with its processor (hub id or local dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from dissectkit.base.context import BuildContext
from dissectkit.base.errors import ComponentError, WeightsError
from dissectkit.base.params import Params
from dissectkit.base.weights import file_fingerprint
from dissectkit.imaging.raw import to_pil
from dissectkit.nn.dissector_base import TorchDissectorBase, digest, hf_offline, hub_fetch_hint


class HfClipParams(Params):
    """``model``: a hub id (``openai/clip-vit-base-patch32``, ``google/siglip-base-patch16-224``) or a
    local directory saved with ``save_pretrained`` (model + processor files)."""

    model: str
    revision: str | None = None
    prompt_template: str | None = None
    padding: Literal["auto", "longest", "max_length"] = "auto"
    max_length: int | None = None
    autocast: bool = True
    text_batch_size: int = 256


def pooled(out: Any):
    """transformers 5 ``get_*_features`` return an output object: its ``pooler_output`` is the
    projected embedding; older versions return the tensor itself."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    value = getattr(out, "pooler_output", None)
    if value is None:
        raise TypeError(f"Cannot find the pooled embedding in {type(out).__name__}")
    return value


def check_loading_info(info: dict[str, Any], where: str) -> None:
    """transformers re-initialises missing / mis-shaped weights with a warning; refuse that instead."""
    parts = []
    for title, key in (("missing keys", "missing_keys"), ("unexpected keys", "unexpected_keys"),
                       ("mis-shaped keys", "mismatched_keys")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
        if keys:
            parts.append(f"{title}: " + ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else ""))
    if parts:
        raise WeightsError(f"hf-clip: the weights of {where} do not match its config - " + "; ".join(parts))


class HfClipDissector(TorchDissectorBase):
    def __init__(self, params: HfClipParams, ctx: BuildContext) -> None:
        from transformers import AutoModel, AutoProcessor

        local = Path(params.model).expanduser()
        source = str(local) if local.is_dir() else params.model
        offline = ctx.offline or local.is_dir()
        try:
            with hf_offline(offline):
                model, info = AutoModel.from_pretrained(
                    source, revision=params.revision, local_files_only=offline,
                    output_loading_info=True, ignore_mismatched_sizes=True,
                )
                processor = AutoProcessor.from_pretrained(source, revision=params.revision, local_files_only=offline)
        except OSError as exc:
            detail = " ".join(str(exc).split())
            if local.is_dir():
                problem = f"the local directory {local} is not a complete save_pretrained directory ({detail})"
            elif ctx.offline:
                problem = f"{params.model!r} is not in the local Hugging Face cache and offline mode is on"
            else:
                problem = f"{params.model!r} could not be loaded ({detail})"
            raise WeightsError(
                f"hf-clip: {problem}. Fetch it on a connected machine with `{hub_fetch_hint(params.model)}`, "
                "or point `model` at a directory holding the model and processor (save_pretrained)."
            ) from None
        check_loading_info(info, params.model)
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ComponentError(
                f"hf-clip: {params.model} loads as {type(model).__name__}, which has no image/text embedding "
                "functions; use a CLIPModel or SiglipModel checkpoint."
            )
        self.model = model.eval()
        self.processor = processor
        self.is_siglip = "siglip" in type(model).__name__.lower()
        self.padding = ("max_length" if self.is_siglip else "longest") if params.padding == "auto" else params.padding
        self.max_length = params.max_length or int(
            getattr(model.config.text_config, "max_position_embeddings", 77)
        )
        self.template = params.prompt_template
        self.amp = params.autocast
        self.text_batch_size = params.text_batch_size
        self.to(ctx.device)
        self.embed_dim = int(self.encode_texts(["x"]).shape[-1])
        commit = getattr(model.config, "_commit_hash", None) or params.revision  # the exact hub snapshot
        weights_id = file_fingerprint(local, ctx) if local.is_dir() else f"{params.model}@{commit}"
        self._fingerprint = digest(
            "hf-clip", weights_id, processor.image_processor.to_dict(), self.padding, self.max_length, self.template
        )

    def preprocess(self, image: Any):
        pixels = self.processor.image_processor(images=to_pil(image, "RGB", model="dissector hf-clip"), return_tensors="pt")["pixel_values"]
        return pixels[0]

    def _image_features(self, images):
        return pooled(self.model.get_image_features(pixel_values=images))

    def _text_features(self, texts: list[str]):
        if self.template:
            texts = [self.template.format(t) for t in texts]
        enc = self.processor.tokenizer(
            texts, padding=self.padding, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        if self.is_siglip:
            inputs.pop("attention_mask", None)  # SigLIP was trained on max_length padding without a mask
        return pooled(self.model.get_text_features(**inputs))

    def fingerprint(self) -> str:
        return self._fingerprint
