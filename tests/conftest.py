"""Shared fixtures: tiny real models and generated probe data, nothing downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TINY_OPENCLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache directory and stays offline."""
    monkeypatch.setenv("DISSECTKIT_CACHE", str(tmp_path_factory.mktemp("dk-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_openclip_dir(tmp_path_factory) -> Path:
    """An open_clip ``local-dir:`` checkpoint (config + random weights) of a tiny ViT CLIP."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-openclip")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_OPENCLIP_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    cfg = {
        "model_cfg": TINY_OPENCLIP_CFG,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    return folder


def write_images(root: Path, n: int, size: tuple[int, int] = (40, 48), seed: int = 0, classes: tuple[str, ...] = ("a", "b")) -> list[Path]:
    """``n`` random-texture RGB PNGs in class sub-folders; returns their paths in order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        cls = classes[i % len(classes)]
        (root / cls).mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
        if cls == classes[0]:
            base[: size[0] // 2] = 255 - base[: size[0] // 2] // 4
        path = root / cls / f"img_{i:04d}.png"
        Image.fromarray(base).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_root(tmp_path) -> Path:
    root = tmp_path / "images"
    write_images(root, 24)
    return root


@pytest.fixture
def concepts_file(tmp_path) -> Path:
    path = tmp_path / "concepts.txt"
    path.write_text("\n".join(["bright top", "dark noise", "texture", "mass", "calcification", "skin", "edge", "dog"]) + "\n")
    return path


def tiny_recipe(tmp_path: Path, openclip_dir: Path, image_root: Path, concepts_file: Path, **extra: str) -> Path:
    """A small but real recipe: tiny open_clip dissector, timm resnet target, image folder probe."""
    text = f"""\
name: tiny
dissector: {{name: open-clip, params: {{pretrained: "local-dir:{openclip_dir}"}}}}
target:
  name: timm
  params: {{model: resnet10t, num_classes: 5, input_size: [3, 64, 64]}}
  layers: [layer3, "layer4", fc]
probe: {{name: image-folder, params: {{root: "{image_root}"}}}}
concepts: {{name: text, params: {{path: "{concepts_file}"}}}}
method: {{name: clip-dissect, params: {{similarity: soft_wpmi, similarity_params: {{top_k: 5}}}}}}
output: {{dir: "{tmp_path / 'out'}", reporters: [csv, json]}}
runtime: {{device: cpu, batch_size: 4, num_workers: 0, seed: 0, chunk_images: 10}}
"""
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path
