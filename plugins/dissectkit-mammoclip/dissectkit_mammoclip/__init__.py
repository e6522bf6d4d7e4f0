"""dissectkit plugin: the Mammo-CLIP dissector and targets (weights: CC BY-NC-SA, non-commercial)."""

from __future__ import annotations

from dissectkit.plugin import Register, hookimpl

LICENCE = "Mammo-CLIP weights: CC BY-NC-SA 4.0 (non-commercial)"


@hookimpl
def dissectkit_register_dissectors(register: Register) -> None:
    from .dissector import MammoClipParams, make_mammo_clip

    register(
        "mammo-clip", make_mammo_clip, params=MammoClipParams,
        description="Mammo-CLIP (EfficientNet-B2/B5 + Bio_ClinicalBERT) from its released checkpoint",
        licence=LICENCE,
    )


@hookimpl
def dissectkit_register_targets(register: Register) -> None:
    from .targets import ClassifierParams, ImageEncoderParams, make_classifier, make_image_encoder

    register(
        "mammo-clip-image-encoder", make_image_encoder, params=ImageEncoderParams,
        description="The image encoder of a Mammo-CLIP pretrained checkpoint (layers image_encoder._blocks.<i>)",
        licence=LICENCE,
    )
    register(
        "mammo-clip-classifier", make_classifier, params=ClassifierParams,
        description="A fine-tuned Mammo-CLIP classifier (EfficientNet + linear head; n_class from the head)",
        licence=LICENCE,
    )
    from .imagenet import ImageNetParams, make_imagenet_encoder

    register(
        "mammo-clip-imagenet", make_imagenet_encoder, params=ImageNetParams,
        description="G of Mammo-CLIP Dissect: the Mammo-CLIP image-encoder architecture with ImageNet B5 weights "
                    "(timm's tf_efficientnet_b5.aa_in1k converted key for key), Mammo-CLIP's preprocessing",
        licence="ImageNet EfficientNet weights: Apache-2.0 (timm / TensorFlow)",
    )
