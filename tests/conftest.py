"""Shared fixtures: tiny real models and generated probe data, nothing downloaded; the plugins a
test needs (the session's host has the built-ins only, see ../conftest.py); float16 tolerance."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import entry_points_only_from, write_images

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


# --------------------------------------------------------------------------- plugins of a test
@pytest.fixture(autouse=True)
def _marked_plugins(request):
    """``@pytest.mark.with_plugin("dissectkit_mammoclip", ...)``: those plugin modules are registered
    in-process for the test (the ``dissectkit_plugin`` fixture), as if installed."""
    modules = [m for mark in request.node.iter_markers("with_plugin") for m in mark.args]
    if modules:
        register = request.getfixturevalue("dissectkit_plugin")
        for module in modules:
            register(module)


@pytest.fixture
def plugin_site(tmp_path, monkeypatch) -> Iterator[Path]:
    """A fresh site directory on ``sys.path`` whose distributions (a ``*.dist-info`` with a
    ``dissectkit`` entry point) are the only ones the host discovers: tests of entry-point discovery
    see what they install, never what the environment has."""
    site = tmp_path / "site"
    site.mkdir()
    with monkeypatch.context() as mp:
        mp.syspath_prepend(str(site))
        importlib.invalidate_caches()
        with entry_points_only_from(site):
            yield site
    importlib.invalidate_caches()


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
