"""dissectkit plugin: the MedCLIP dissector (ViT = Swin-tiny, or ResNet-50), without the medclip package."""

from __future__ import annotations

from dissectkit.plugin import Register, hookimpl


@hookimpl
def dissectkit_register_dissectors(register: Register) -> None:
    from .dissector import MedClipParams, make_medclip

    register(
        "medclip", make_medclip, params=MedClipParams,
        description="MedCLIP (Swin-tiny or ResNet-50 + Bio_ClinicalBERT) from its pytorch_model.bin",
        licence="MedCLIP weights: see the MedCLIP repository (research use)",
    )
