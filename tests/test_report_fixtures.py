"""A tiny, real dissection world for report and comparison tests (no engine needed).

A generated probe with shapes and masks, a tiny conv net whose real activations and spatial maps
back the live handles, and label sets computed from them (correlation / cosine of activations
with concept presence), including a dead neuron that gets no concept.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.methods import LayerLabels
from dissectkit.results import LABELS, MANIFEST, LabelSet, RunResult
from dissectkit.types import Concept, LayerInfo, ProbeItem

CONCEPTS = [
    Concept("circle", "shape", "round"),
    Concept("square", "shape", "angular"),
    Concept("bright", "intensity"),
    Concept("dark", "intensity"),
    Concept("noise"),
]
LAYERS = ("relu1", "relu2")


class ShapesProbe:
    """``n`` images with a red disc and/or a green square (and their masks); one is 16-bit grey."""

    has_masks = True

    def __init__(self, n: int = 12, size: int = 40, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:size, :size]
        self.items = []
        for i in range(n):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            masks = {}
            if i % 3 != 2:
                cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(4, 9))]
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                img[m] = (230, 40, 40)
                masks["circle"] = m
            if i % 2 == 0:
                y0, x0 = rng.integers(0, size - 12, 2)
                m = np.zeros((size, size), bool)
                m[y0:y0 + 12, x0:x0 + 12] = True
                img[m] = (40, 220, 40)
                masks["square"] = m
            image = img if i != 5 else (img.mean(axis=2) * 257).astype(np.uint16)
            self.items.append(ProbeItem(image=image, id=f"shape-{i:02d}", masks=masks or None))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> ProbeItem:
        return self.items[i]

    def fingerprint(self) -> str:
        return "shapes"


def tiny_net(seed: int = 0):
    """conv(3->4) relu conv(4->6, stride 2) relu; the last channel of relu1 is dead (always 0)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(4, 6, 3, stride=2, padding=1), relu2=nn.ReLU(),
    )).eval()
    with torch.no_grad():
        net.conv1.weight[3].zero_()
        net.conv1.bias[3] = -1.0
    return net


def spatial_outputs(net, probe) -> dict[str, Any]:
    """Unpooled outputs ``[N, K, h, w]`` of every layer for the whole probe."""
    import torch

    from dissectkit.imaging import gray_or_rgb, to_unit_float

    x = torch.stack([torch.from_numpy(gray_or_rgb(to_unit_float(it.image))).permute(2, 0, 1) for it in probe.items])
    out = {}
    h = x
    with torch.no_grad():
        for name, module in net.named_children():
            h = module(h)
            if name in LAYERS:
                out[name] = h.clone()
    return out


def presence(probe) -> np.ndarray:
    """``[N, C]`` concept presence of each image (masks; brightness; a fixed random 'noise')."""
    n = len(probe)
    y = np.zeros((n, len(CONCEPTS)), dtype=np.float64)
    means = np.array([float(np.asarray(it.image, dtype=np.float64).mean() / (257 if it.image.dtype == np.uint16 else 1))
                      for it in probe.items])
    for i, it in enumerate(probe.items):
        masks = it.masks or {}
        y[i, 0] = "circle" in masks
        y[i, 1] = "square" in masks
    y[:, 2] = means > np.median(means)
    y[:, 3] = 1 - y[:, 2]
    y[:, 4] = np.random.default_rng(7).integers(0, 2, n)
    return y


def label_layer(acts: np.ndarray, y: np.ndarray, layer: str, method: str, top: int = 3) -> LayerLabels:
    """Per neuron, the concepts whose presence correlates (``corr``) or aligns (``cos``) with it."""
    a = acts - acts.mean(0) if method == "corr" else acts
    p = y - y.mean(0) if method == "corr" else y
    na, npres = np.linalg.norm(a, axis=0), np.linalg.norm(p, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = (a.T @ p) / (na[:, None] * npres[None, :])
    neurons = []
    for k in range(acts.shape[1]):
        order = [c for c in np.argsort(-np.nan_to_num(s[k], nan=-np.inf)) if np.isfinite(s[k, c]) and s[k, c] > 0]
        neurons.append([(CONCEPTS[c].text, float(s[k, c])) for c in order[:top]])
    return LayerLabels(layer, method, {"top": top}, neurons)


def make_run(tmp_path: Path, name: str = "tiny", methods: tuple[str, ...] = ("corr",), target: str = "tinynet",
             seed: int = 0, n: int = 12, live: bool = True) -> RunResult:
    """A RunResult with live handles (activations, spatial maps, probe) and one label set per method."""
    import torch

    probe = ShapesProbe(n=n)
    outputs = spatial_outputs(tiny_net(seed), probe)
    pooled = {layer: out.mean(dim=(2, 3)) for layer, out in outputs.items()}
    y = presence(probe)
    calls: list[tuple[str, str, int]] = []

    def activations(t: str, layer: str) -> torch.Tensor:
        assert t == target
        return pooled[layer]

    def spatial_maps(t: str, layer: str, indices: list[int]) -> torch.Tensor:
        assert t == target
        calls.append((t, layer, len(indices)))
        return outputs[layer][indices]

    sets = [
        LabelSet("shape-clip", target, m, {layer: label_layer(pooled[layer].numpy().astype(np.float64), y, layer, m)
                                           for layer in LAYERS})
        for m in methods
    ]
    run = RunResult(
        name=name, out_dir=tmp_path / name, recipe={"target": {"name": target}, "method": {"name": methods[0]}},
        concepts=list(CONCEPTS), probe_ids=[it.id for it in probe.items], label_sets=sets,
        layer_infos={target: [LayerInfo(layer, pooled[layer].shape[1], "conv") for layer in LAYERS]},
        probe=probe if live else None, activations=activations if live else None,
        spatial_maps=spatial_maps if live else None,
    )
    run.spatial_calls = calls  # type: ignore[attr-defined]
    run.outputs = outputs  # type: ignore[attr-defined]
    return run


def save_run(run: RunResult) -> Path:
    """Write ``labels.json`` and ``manifest.json`` as the engine does; returns the run directory."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    (run.out_dir / LABELS).write_text(json.dumps(run.labels_payload()))
    (run.out_dir / MANIFEST).write_text(json.dumps({"recipe": run.recipe, "stats": {}}))
    return run.out_dir


def test_fixture_world_is_real(tmp_path):
    run = make_run(tmp_path, methods=("corr", "cos"))
    relu1 = run.label_sets[0].layers["relu1"]
    assert relu1.neurons[3] == []  # the dead channel has no concept
    assert any(len(r) > 0 for r in relu1.neurons[:3])
    assert run.activations("tinynet", "relu2").shape == (12, 6)
    assert run.spatial_maps("tinynet", "relu2", [0, 3]).shape == (2, 6, 20, 20)
    assert run.label_sets[0].layers["relu1"].top1() != run.label_sets[1].layers["relu1"].top1()
