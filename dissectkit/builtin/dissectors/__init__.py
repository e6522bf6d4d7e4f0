"""Built-in dissectors: ``open-clip`` and ``hf-clip`` (Mammo-CLIP and MedCLIP live in their plugins)."""

from __future__ import annotations

from dissectkit.builtin.dissectors.hfclip import HfClipDissector, HfClipParams
from dissectkit.builtin.dissectors.openclip import OpenClipDissector, OpenClipParams
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register


@hookimpl
def dissectkit_register_dissectors(register: Register) -> None:
    for name, dissector, params, description in (
        ("open-clip", OpenClipDissector, OpenClipParams,
         "Any open_clip model: OpenAI CLIP, OpenCLIP, BiomedCLIP (hf-hub:), local files or dirs"),
        ("hf-clip", HfClipDissector, HfClipParams,
         "transformers CLIPModel / SiglipModel with its processor, from a hub id or a local directory"),
    ):
        register(name, dissector, params=params, description=description, licence="per checkpoint (see its model card)")
