"""The ``synth-clip`` dissector and the ``synth-effnet-*`` targets (component objects)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from dissectkit.context import BuildContext
from dissectkit.layers import infer_layer_infos
from dissectkit.synthetic import arch, models
from dissectkit.types import LayerInfo

PREPROCESS_ID = f"gray-minmax-area{models.MODEL_INPUT[0]}x{models.MODEL_INPUT[1]}-m{models.PIXEL_MEAN}-s{models.PIXEL_STD}"


def _weights_fingerprint(prefix: str, path: Any, ctx: BuildContext, *parts: str) -> str:
    from dissectkit.weights import file_fingerprint

    h = file_fingerprint(path, ctx)
    return f"{prefix}:" + hashlib.sha256("|".join((h, *parts)).encode()).hexdigest()[:16]


class SynthClip:
    """Image encoder + hashing-tokenizer text encoder trained contrastively on synthetic reports."""

    def __init__(self, weights: Any = None, ctx: BuildContext | None = None) -> None:
        ctx = ctx or BuildContext()
        ref = weights if weights is not None else arch.packaged_ref("synth-clip")
        from dissectkit import weights as wmod

        path = wmod.resolve(ref, ctx, what="synth-clip weights")
        cfg = arch.weights_config(path)["clip"]
        self.model = models.build_clip(cfg).eval()
        self.path = models.load_weights_into(self.model, path, "synth-clip weights")
        self.tokenizer = models.build_tokenizer(cfg)
        self._config_id = json.dumps(cfg, sort_keys=True)  # architecture and tokenizer: part of the fingerprint
        self.embed_dim = int(cfg["embed_dim"])
        self.input_size = models.MODEL_INPUT
        self._ctx = ctx
        self._fingerprint: str | None = None
        self.device = torch.device(ctx.device)
        self.model.to(self.device)

    def to(self, device: Any) -> SynthClip:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def preprocess(self, image: Any) -> torch.Tensor:
        return models.preprocess_image(image)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.device, torch.float32))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        ids, offsets = self.tokenizer.batch([str(t) for t in texts])
        return self.model.encode_text(torch.from_numpy(ids).to(self.device), torch.from_numpy(offsets).to(self.device))

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _weights_fingerprint("synth-clip", self.path, self._ctx, PREPROCESS_ID, self._config_id)
        return self._fingerprint


class SynthEffnetTarget:
    """A ``tinynet_e`` (timm EfficientNet) trained in the synthetic world; layers ``blocks.<i>``,
    ``conv_head``, ``classifier``. ``ground_truth("classifier")`` gives each output's concept."""

    def __init__(self, name: str, weights: Any = None, ctx: BuildContext | None = None) -> None:
        ctx = ctx or BuildContext()
        from dissectkit import weights as wmod

        ref = weights if weights is not None else arch.packaged_ref(name)
        path = wmod.resolve(ref, ctx, what=f"{name} weights")
        self.classes = arch.target_classes(name, arch.weights_config(path))
        self.name = name
        self.module = models.build_effnet(arch.n_outputs(self.classes)).eval()
        self.path = models.load_weights_into(self.module, path, f"{name} weights")
        self._ctx = ctx
        self._fingerprint: str | None = None
        self.device = torch.device(ctx.device)
        self.module.to(self.device)
        self._layers: list[LayerInfo] | None = None

    def to(self, device: Any) -> SynthEffnetTarget:
        self.device = torch.device(device)
        self.module.to(self.device)
        return self

    def preprocess(self, image: Any) -> torch.Tensor:
        return models.preprocess_image(image)

    def layers(self) -> list[LayerInfo]:
        if self._layers is None:
            dummy = torch.zeros(1, 3, *models.MODEL_INPUT, device=self.device)
            self._layers = infer_layer_infos(self.module, dummy)
        return list(self._layers)

    def ground_truth(self, layer: str) -> list[str | None] | None:
        """The true concept of each output neuron of ``classifier`` (None for other layers)."""
        if layer == "classifier" and self.classes is not None:
            return list(self.classes)
        return None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _weights_fingerprint(self.name, self.path, self._ctx, PREPROCESS_ID)
        return self._fingerprint
