"""Built-in labelling methods: ``clip-dissect``, ``mammi`` and ``netdissect`` (docs/methods.md)."""

from __future__ import annotations

from dissectkit.builtin.methods.clip_dissect import ClipDissectParams, make_clip_dissect
from dissectkit.builtin.methods.mammi import MammiParams, make_mammi
from dissectkit.builtin.methods.netdissect import NetDissectParams, make_netdissect
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register

__all__ = ["dissectkit_register_methods"]


@hookimpl
def dissectkit_register_methods(register: Register) -> None:
    register("clip-dissect",
        make_clip_dissect,
        params=ClipDissectParams,
        description="CLIP-Dissect: a similarity function of P = I T^T and the activations (default soft_wpmi)",
        licence=None,
    )
    register("mammi",
        make_mammi,
        params=MammiParams,
        description="MAMMI: adaptive representative images, template-relative cosine, beta cut (concept lists)",
        licence=None,
    )
    register("netdissect",
        make_netdissect,
        params=NetDissectParams,
        description="Network Dissection: IoU of thresholded activation maps with concept masks",
        licence=None,
    )
