"""Built-in labelling methods: ``clip-dissect``, ``mammi``, ``netdissect`` and ``mammo-factor`` (docs/methods.md)."""

from __future__ import annotations

from dissectkit.builtin.methods.clip_dissect import ClipDissect, ClipDissectParams
from dissectkit.builtin.methods.factor import FactorParams, MammoFactor
from dissectkit.builtin.methods.mammi import Mammi, MammiParams
from dissectkit.builtin.methods.netdissect import NetDissect, NetDissectParams
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register

__all__ = ["dissectkit_register_methods"]


@hookimpl
def dissectkit_register_methods(register: Register) -> None:
    for name, method, params, description in (
        ("clip-dissect", ClipDissect, ClipDissectParams,
         "CLIP-Dissect: a similarity function of P = I T^T and the activations (default soft_wpmi)"),
        ("mammi", Mammi, MammiParams,
         "MAMMI: adaptive representative images, template-relative cosine, beta cut (concept lists)"),
        ("netdissect", NetDissect, NetDissectParams,
         "Network Dissection: IoU of thresholded activation maps with concept masks"),
        ("mammo-factor", MammoFactor, FactorParams,
         "Mammo-FActOR: per-attribute heads map channels' spatial maps to the attributes' text embeddings"),
    ):
        register(name, method, params=params, description=description, licence=None)
