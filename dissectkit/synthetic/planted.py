"""``synth-effnet-planted``: ``synth-effnet-concepts`` with a final conv layer whose channels carry
known concepts (docs/synthetic.md, "Planted concept channels").

Layer ``planted`` applies the target's own classifier at every location of its final feature map
(``bn2``, 1280 x 4 x 2 at the 112 x 64 input): channel ``c`` is the class activation map of output
``c`` (``w_c . F(y, x) + b_c``; its mean over the map is exactly logit ``c``), one channel per finding
and composition class, so its concept is known. ``unplanted`` more channels are seeded random
projections of the same features, scaled like the classifier's rows: they carry no concept (truth
``None``). Nothing is trained: the layer is built from the committed weights when the network is.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from dissectkit.base.context import BuildContext
from dissectkit.base.types import LayerInfo
from dissectkit.synthetic import arch
from dissectkit.synthetic.components import SynthEffnetTarget

PLANTED = "planted"
FEATURES = "bn2"
"""The module whose output (the final feature map, after its activation) the planted layer reads."""


def planted_layer(n_out: int, unplanted: int) -> LayerInfo:
    """The planted layer's ``LayerInfo`` (from the packaged layer table: no torch model built)."""
    shape = next(info.shape for info in arch.effnet_layers(n_out) if info.name == FEATURES)
    assert shape is not None
    return LayerInfo(PLANTED, n_out + unplanted, "conv", (n_out + unplanted, *shape[1:]))


class SynthEffnetPlanted(SynthEffnetTarget):
    """The concepts target plus the layer ``planted`` (class activation maps + ``unplanted`` random
    channels); ``ground_truth("planted")`` gives each channel's concept (``None`` for the random ones)."""

    def __init__(self, weights: Any = None, ctx: BuildContext | None = None, unplanted: int = 12, seed: int = 0) -> None:
        super().__init__("synth-effnet-concepts", weights, ctx)
        self.name = "synth-effnet-planted"
        self.unplanted = int(unplanted)
        self.seed = int(seed)
        self._planted = False

    @property
    def module(self) -> torch.nn.Module:
        net = super().module
        if not self._planted:
            head = net.classifier
            W, b = head.weight.detach(), head.bias.detach()
            gen = torch.Generator().manual_seed(self.seed)
            R = torch.randn(self.unplanted, W.shape[1], generator=gen).to(W)
            R = R / R.norm(dim=1, keepdim=True).clamp_min(1e-12) * W.norm(dim=1).mean()
            conv = nn.Conv2d(W.shape[1], W.shape[0] + self.unplanted, 1).to(W.device)
            with torch.no_grad():
                conv.weight.copy_(torch.cat([W, R])[:, :, None, None])
                conv.bias.copy_(torch.cat([b, torch.zeros(self.unplanted, device=b.device, dtype=b.dtype)]))
            net.add_module(PLANTED, nn.Sequential(conv, nn.ReLU()).eval())

            def run_planted(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
                net.get_submodule(PLANTED)(out)  # its output is what hooks on ``planted`` capture

            getattr(net, FEATURES).register_forward_hook(run_planted)
            self._planted = True
        return net

    def layers(self) -> list[LayerInfo]:
        return [*super().layers(), planted_layer(arch.n_outputs(self.classes), self.unplanted)]

    def ground_truth(self, layer: str) -> list[str | None] | None:
        if layer == PLANTED and self.classes is not None:
            return [*self.classes, *([None] * self.unplanted)]
        return super().ground_truth(layer)

    def fingerprint(self) -> str:
        base = super().fingerprint()
        return f"{self.name}:" + hashlib.sha256(f"{base}|{PLANTED}|relu|{self.unplanted}|{self.seed}".encode()).hexdigest()[:16]
