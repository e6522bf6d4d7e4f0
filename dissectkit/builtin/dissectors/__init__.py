"""Built-in dissectors: ``open-clip`` and ``hf-clip`` (Mammo-CLIP and MedCLIP live in their plugins)."""

from __future__ import annotations

from dissectkit.builtin.dissectors.hfclip import HfClipParams, make_hf_clip
from dissectkit.builtin.dissectors.openclip import OpenClipParams, make_open_clip
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register


@hookimpl
def dissectkit_register_dissectors(register: Register) -> None:
    register("open-clip",
        make_open_clip,
        params=OpenClipParams,
        description="Any open_clip model: OpenAI CLIP, OpenCLIP, BiomedCLIP (hf-hub:), local files or dirs",
        licence="per checkpoint (see its model card)",
    )
    register("hf-clip",
        make_hf_clip,
        params=HfClipParams,
        description="transformers CLIPModel / SiglipModel with its processor, from a hub id or a local directory",
        licence="per checkpoint (see its model card)",
    )
