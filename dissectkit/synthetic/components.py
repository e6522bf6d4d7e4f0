"""The ``synth-clip`` dissector and the ``synth-effnet-*`` targets (component objects)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from dissectkit.context import BuildContext
from dissectkit.layers import infer_layer_infos
from dissectkit.synthetic import models
from dissectkit.types import LayerInfo

PREPROCESS_ID = f"gray-minmax-area{models.MODEL_INPUT[0]}x{models.MODEL_INPUT[1]}-m{models.PIXEL_MEAN}-s{models.PIXEL_STD}"


def _packaged(name: str) -> dict[str, str]:
    cfg = models.read_config()
    return {"path": str(models.WEIGHTS_DIR / cfg["files"][name])}


def _weights_config(path: Path) -> dict[str, Any]:
    """The json config next to a weights file (falls back to the packaged one)."""
    local = Path(path).parent / models.CONFIG_FILE
    return models.read_config(local.parent) if local.exists() else models.read_config()


class SynthClip:
    """Image encoder + hashing-tokenizer text encoder trained contrastively on synthetic reports."""

    def __init__(self, weights: Any = None, ctx: BuildContext | None = None) -> None:
        ctx = ctx or BuildContext()
        ref = weights if weights is not None else _packaged("synth-clip")
        from dissectkit import weights as wmod

        path = wmod.resolve(ref, ctx, what="synth-clip weights")
        cfg = _weights_config(path)["clip"]
        self.model = models.build_clip(cfg).eval()
        self.path = models.load_weights_into(self.model, {"path": str(path)}, ctx, "synth-clip weights")
        self.tokenizer = models.build_tokenizer(cfg)
        self._config_id = json.dumps(cfg, sort_keys=True)  # architecture and tokenizer: part of the fingerprint
        self.embed_dim = int(cfg["embed_dim"])
        self.input_size = models.MODEL_INPUT
        self._ctx = ctx
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
        from dissectkit.weights import file_fingerprint

        h = file_fingerprint(self.path, self._ctx)
        return "synth-clip:" + hashlib.sha256(f"{h}|{PREPROCESS_ID}|{self._config_id}".encode()).hexdigest()[:16]


class SynthEffnetTarget:
    """A ``tinynet_e`` (timm EfficientNet) trained in the synthetic world; layers ``blocks.<i>``,
    ``conv_head``, ``classifier``. ``ground_truth("classifier")`` gives each output's concept."""

    def __init__(self, name: str, weights: Any = None, ctx: BuildContext | None = None) -> None:
        ctx = ctx or BuildContext()
        from dissectkit import weights as wmod

        ref = weights if weights is not None else _packaged(name)
        path = wmod.resolve(ref, ctx, what=f"{name} weights")
        cfg = _weights_config(path)
        if name == "synth-effnet-concepts":
            self.classes: list[str] | None = list(cfg["concept_classes"])
        elif name == "synth-effnet-general":
            self.classes = list(cfg["general_classes"])
        else:
            self.classes = None
        n_out = len(self.classes) if self.classes else 1
        self.name = name
        self.module = models.build_effnet(n_out).eval()
        self.path = models.load_weights_into(self.module, {"path": str(path)}, ctx, f"{name} weights")
        self._ctx = ctx
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
        from dissectkit.weights import file_fingerprint

        h = file_fingerprint(self.path, self._ctx)
        return f"{self.name}:" + hashlib.sha256(f"{h}|{PREPROCESS_ID}".encode()).hexdigest()[:16]
