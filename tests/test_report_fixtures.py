"""A tiny, real dissection world for report and comparison tests (no engine needed).

A generated probe with shapes and masks, a tiny conv net whose real activations (written into a
real cache) and spatial maps back the run's evidence, and label sets computed from them (correlation / cosine of activations
with concept presence), including a dead neuron that gets no concept.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.base.types import Concept, LayerInfo, ProbeItem
from dissectkit.labelling.evidence import LayerLabels
from dissectkit.results.run_result import LABELS, MANIFEST, LabelSet, RunResult

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

    from dissectkit.imaging.raw import gray_or_rgb, to_unit_float

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


class TinyTarget:
    """The tiny net as a dissectkit target: ``module`` and ``preprocess`` (unit float, RGB, CHW)."""

    def __init__(self, net) -> None:
        self.module = net
        self.forward_batches: list[int] = []
        net.register_forward_pre_hook(lambda _m, inp: self.forward_batches.append(int(inp[0].shape[0])))

    def preprocess(self, image):
        import torch

        from dissectkit.imaging.raw import gray_or_rgb, to_unit_float

        return torch.from_numpy(gray_or_rgb(to_unit_float(image))).permute(2, 0, 1)


def cache_activations(root: Path, pooled: dict[str, Any], skipped: dict[int, str], chunk: int = 5) -> dict[tuple[str, str], Any]:
    """Write pooled activations into real cache entries, chunk by chunk (skipped rows: zeros, invalid)."""
    import torch

    from dissectkit.engine.cache import Cache

    cache = Cache(root)
    entries = {}
    for layer, acts in pooled.items():
        n = acts.shape[0]
        entry = cache.entry("acts", f"tiny-{layer}", n, chunk, {"layer": layer})
        for c in range(entry.n_chunks):
            rows = list(entry.chunk_range(c))
            valid = torch.tensor([i not in skipped for i in rows])
            values = acts[rows].clone()
            values[~valid] = 0.0
            entry.write_chunk(c, values, valid, {i: skipped[i] for i in rows if i in skipped})
        entries[("tinynet", layer)] = entry
    return entries


def make_run(tmp_path: Path, name: str = "tiny", methods: tuple[str, ...] = ("corr",), target: str = "tinynet",
             seed: int = 0, n: int = 12, live: bool = True, skipped: dict[int, str] | None = None) -> RunResult:
    """A RunResult with live evidence (activations in a real cache, the tiny net as target, the probe)
    and one label set per method; ``skipped`` images are left out of the cache as the engine does."""
    from dissectkit.results.evidence import build_run_evidence

    skipped = dict(skipped or {})
    probe = ShapesProbe(n=n)
    net = tiny_net(seed)
    outputs = spatial_outputs(net, probe)
    pooled = {layer: out.mean(dim=(2, 3)) for layer, out in outputs.items()}
    y = presence(probe)
    valid = [i for i in range(n) if i not in skipped]
    sets = [
        LabelSet("shape-clip", target, m, {layer: label_layer(pooled[layer][valid].numpy().astype(np.float64), y[valid], layer, m)
                                           for layer in LAYERS})
        for m in methods
    ]
    tiny = TinyTarget(net)
    evidence = build_run_evidence(cache_activations(tmp_path / f"{name}-cache", pooled, skipped), {}, probe,
                                  {target: tiny}, "cpu", skipped)
    run = RunResult(
        name=name, out_dir=tmp_path / name, recipe={"target": {"name": target}, "method": {"name": methods[0]}},
        concepts=list(CONCEPTS), probe_ids=[it.id for it in probe.items], label_sets=sets,
        layer_infos={target: [LayerInfo(layer, pooled[layer].shape[1], "conv") for layer in LAYERS]},
        probe=probe if live else None, top_images=evidence.top, evidence=evidence if live else None,
    )
    run.forward_batches = tiny.forward_batches  # type: ignore[attr-defined]
    run.outputs = outputs  # type: ignore[attr-defined]
    run.pooled = pooled  # type: ignore[attr-defined]
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
    x = run.evidence.model_input("tinynet", run.probe[0].image)[None]
    maps = run.evidence.spatial_maps("tinynet", ["relu1", "relu2"], x)
    assert maps["relu2"].shape == (1, 6, 20, 20) and maps["relu1"].shape == (1, 4, 40, 40)
    assert np.allclose(maps["relu2"][0].numpy(), run.outputs["relu2"][0].numpy(), atol=1e-6)
    assert run.label_sets[0].layers["relu1"].top1() != run.label_sets[1].layers["relu1"].top1()
