"""Mammo-CLIP targets: the pretrained image encoder and fine-tuned classifiers.

Layers are ``image_encoder._blocks.<i>`` (and ``classifier.classification_head``), as in
Mammo-CLIP Dissect. ``layers()`` needs no weights: shapes come from the architecture on the meta
device; the variant comes from the ``variant`` parameter or the file name (else the file is read).
"""

from __future__ import annotations

from typing import Any

from dissectkit.plugin import (
    BuildContext,
    LayerInfo,
    WeightsError,
    digest,
    file_fingerprint,
    load_state_dict_strict,
    resolve_weights,
)

from . import checkpoint, model

HEAD = "classifier.classification_head"


class ImageEncoderParams(checkpoint.WeightsParams):
    """``weights``: a Mammo-CLIP pretrained checkpoint; only its ``image_encoder.*`` weights are used."""


class ClassifierParams(checkpoint.WeightsParams):
    """``weights``: a fine-tuned Mammo-CLIP classifier file ``{model, predictions, epoch, auroc}``;
    ``n_class`` (optional) lets ``layers()`` list the head without reading the file."""

    n_class: int | None = None


def _build_module(variant: str, sd: dict[str, Any], head: bool):
    from torch import nn

    class _Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.classification_head = model.linear_from(sd, HEAD + ".")

    class MammoEffNet(nn.Module):
        """EfficientNet features (pooled) -> optional linear head."""

        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = model.build_efficientnet(variant, sd)
            if head:
                self.classifier = _Classifier()

        def forward(self, x):
            feats = model.image_features(self.image_encoder, x)
            return self.classifier.classification_head(feats) if head else feats

    return MammoEffNet()


class MammoEffNetTarget(checkpoint.LazyTarget):
    """A lazily loaded Mammo-CLIP EfficientNet (``module`` reads the weights on first access)."""

    def __init__(self, params: checkpoint.WeightsParams, ctx: BuildContext, head: bool) -> None:
        self.params = params
        self.ctx = ctx
        self.head = head
        self.image_size = tuple(params.image_size)
        self.device = ctx.device
        self._module = None
        self._n_class: int | None = getattr(params, "n_class", None)
        self._variant = params.variant or model.variant_from_name(checkpoint.file_name(params).rsplit("/", 1)[-1])
        self._fingerprint: str | None = None
        self.what = "Mammo-CLIP classifier" if head else "Mammo-CLIP checkpoint (image encoder)"

    def _load(self):
        path, sd, config = checkpoint.read(self.params, self.ctx, self.what)
        variant = model.detect_variant(sd, config, self.params.variant, what=f"{self.what} {path}")
        if self._variant is not None and self._variant != variant:
            raise WeightsError(
                f"{self.what} {path}: its name suggests {self._variant} but its weights are {variant}; "
                f"set `variant: {variant}`."
            )
        keep = (model.IMG, HEAD + ".") if self.head else (model.IMG,)
        sd = {k: v for k, v in sd.items() if k.startswith(keep)}
        if self.head:
            if HEAD + ".weight" not in sd:
                raise WeightsError(f"{self.what} {path} has no {HEAD}.weight: is it a fine-tuned classifier file?")
            n_class = int(sd[HEAD + ".weight"].shape[0])
            if self._n_class is not None and self._n_class != n_class:
                raise WeightsError(f"{self.what} {path}: `n_class: {self._n_class}` but its head has {n_class} outputs.")
            self._n_class = n_class
        net = _build_module(variant, sd, self.head)
        load_state_dict_strict(net, sd, what=f"{self.what} {path}", ignore=model.IGNORED)
        self._variant = variant
        self._module = net.eval().to(self.device)

    def layers(self) -> list[LayerInfo]:
        if self._variant is None or (self.head and self._n_class is None):
            self.module  # noqa: B018 - the variant / head size are only in the file
        assert self._variant is not None
        infos = model.block_layer_infos(self._variant, self.image_size)
        if self.head:
            infos.append(LayerInfo(HEAD, int(self._n_class or 0), "linear", (int(self._n_class or 0),)))
        return infos

    def ground_truth(self, layer: str) -> None:
        return None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            path = resolve_weights(self.params.weights, self.ctx, what=self.what)
            self._fingerprint = digest(
                "mammo-clip-target", self.head, file_fingerprint(path, self.ctx), self.image_size, model.MEAN, model.STD,
                *((self.params.conversion,) if self.params.conversion != "none" else ()),
            )
        return self._fingerprint


def make_image_encoder(params: ImageEncoderParams, ctx: BuildContext) -> MammoEffNetTarget:
    return MammoEffNetTarget(params, ctx, head=False)


def make_classifier(params: ClassifierParams, ctx: BuildContext) -> MammoEffNetTarget:
    return MammoEffNetTarget(params, ctx, head=True)
