"""The ``synth-clip`` dissector and the ``synth-effnet-*`` targets (component objects)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from dissectkit.base import weights as wmod
from dissectkit.base.context import BuildContext
from dissectkit.base.contract import Dissector, Target
from dissectkit.base.errors import ComponentError
from dissectkit.base.types import LayerInfo
from dissectkit.nn.layers import infer_layer_infos
from dissectkit.synthetic import arch, models

PREPROCESS_ID = f"gray-minmax-area{models.MODEL_INPUT[0]}x{models.MODEL_INPUT[1]}-m{models.PIXEL_MEAN}-s{models.PIXEL_STD}"


def _weights_fingerprint(prefix: str, path: Any, ctx: BuildContext, *parts: str) -> str:
    h = wmod.file_fingerprint(path, ctx)
    return f"{prefix}:" + hashlib.sha256("|".join((h, *parts)).encode()).hexdigest()[:16]


class SynthClip(Dissector):
    """Image encoder + hashing-tokenizer text encoder trained contrastively on synthetic reports."""

    def __init__(self, weights: Any = None, ctx: BuildContext | None = None) -> None:
        ctx = ctx or BuildContext()
        ref = weights if weights is not None else arch.packaged_ref("synth-clip")
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

    def preprocess_key(self) -> str:
        """The synthetic world's models all preprocess alike: one input tensor per image for them all."""
        return PREPROCESS_ID

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


class SynthEffnetTarget(Target):
    """A ``tinynet_e`` (timm's EfficientNet, run as :class:`~dissectkit.synthetic.models.TinyNetE`)
    trained in the synthetic world; layers ``blocks.<i>``, ``conv_head``, ``classifier``.
    ``ground_truth("classifier")`` gives each output's concept."""

    def __init__(self, name: str, weights: Any = None, ctx: BuildContext | None = None) -> None:
        ctx = ctx or BuildContext()
        ref = weights if weights is not None else arch.packaged_ref(name)
        self._what = f"{name} weights"
        self.path = wmod.resolve(ref, ctx, what=self._what)
        self.classes = arch.target_classes(name, arch.weights_config(self.path))
        self.name = name
        self._ctx = ctx
        self._fingerprint: str | None = None
        self.device = torch.device(ctx.device)
        self._module: torch.nn.Module | None = None
        if not arch.check_effnet_file(self.path, arch.n_outputs(self.classes), self._what):
            self.module  # noqa: B018 - a file whose header cannot be checked is read now, before any run starts

    @property
    def module(self) -> torch.nn.Module:
        """The network, built and its weights read (once) on first use: a run whose activations are
        all cached never builds it. Built without timm (:func:`~dissectkit.synthetic.models.build_tinynet`)."""
        if self._module is None:
            n_out = arch.n_outputs(self.classes)
            module = models.build_tinynet(n_out).eval()
            models.load_weights_into(module, self.path, self._what)
            built = infer_layer_infos(module, torch.zeros(1, 3, *models.MODEL_INPUT))
            if built != arch.effnet_layers(n_out):
                raise ComponentError(
                    f"dissectkit.synthetic.models.TinyNetE builds other layers than the packaged table {arch.LAYER_TABLE} "
                    f"of timm's {arch.TARGET_ARCH}: check TinyNetE against timm (tests/test_synthetic_models.py) or "
                    "regenerate the table with `python -c \"from dissectkit.synthetic.models import write_layer_table; "
                    "write_layer_table()\"`."
                )
            self._module = module.to(self.device)
        return self._module

    def to(self, device: Any) -> SynthEffnetTarget:
        self.device = torch.device(device)
        if self._module is not None:
            self._module.to(self.device)
        return self

    def preprocess(self, image: Any) -> torch.Tensor:
        return models.preprocess_image(image)

    def preprocess_key(self) -> str:
        return PREPROCESS_ID

    def layers(self) -> list[LayerInfo]:
        """From the packaged table (the built module is checked against it when it is built)."""
        return arch.effnet_layers(arch.n_outputs(self.classes))

    def ground_truth(self, layer: str) -> list[str | None] | None:
        """The true concept of each output neuron of ``classifier`` (None for other layers)."""
        if layer == "classifier" and self.classes is not None:
            return list(self.classes)
        return None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _weights_fingerprint(self.name, self.path, self._ctx, PREPROCESS_ID)
        return self._fingerprint
