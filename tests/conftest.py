"""Shared fixtures: tiny real models and generated probe data, nothing downloaded; the plugins a
test needs (the session's host has the built-ins only, see ../conftest.py); float16 tolerance."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def entry_points_only_from(site: Path) -> Iterator[Path]:
    """The host discovers the ``dissectkit`` entry points of the distributions installed in ``site``
    and none of the environment's (``DISSECTKIT_BUILTINS_ONLY`` is lifted meanwhile); the process-wide
    host is rebuilt from the built-ins on the way out."""
    from dissectkit.host.manager import BUILTINS_ONLY_ENV, ENTRY_POINT_GROUP, get_host

    real = importlib.metadata.entry_points

    def entry_points(**params):
        if params.get("group") != ENTRY_POINT_GROUP:
            return real(**params)
        found = [ep for dist in importlib.metadata.distributions(path=[str(site)]) for ep in dist.entry_points]
        return importlib.metadata.EntryPoints(found).select(**params)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv(BUILTINS_ONLY_ENV, raising=False)
            mp.setattr(importlib.metadata, "entry_points", entry_points)
            yield site
    finally:
        get_host(reload=True)


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


@pytest.fixture(autouse=True)
def _discovery_from_the_site_fixture(request):
    """tests/test_plugins.py's own ``site`` fixture (a throwaway site directory) gets the same
    discovery as ``plugin_site``. Interim, until that file's tests request ``plugin_site``."""
    if "site" not in request.fixturenames or "plugin_site" in request.fixturenames:
        yield
        return
    with entry_points_only_from(request.getfixturevalue("site")):
        yield


# --------------------------------------------------------------------------- float16 tolerance
def ulp_float16(x) -> np.ndarray:
    """The spacing of float16 numbers at ``|x|`` (one step of the last bit; 2**-24 among subnormals)."""
    mag = np.abs(np.asarray(x, dtype=np.float64))
    return np.exp2(np.floor(np.log2(np.maximum(mag, 2.0**-14))) - 10)


def assert_within_float16_step(got, want, steps: int = 1) -> None:
    """``|got - want| <= steps * ulp_float16(max(|got|, |want|))`` elementwise, same shapes: for float16
    values whose arithmetic differs by batching (a batched pass against a direct computation). Values
    read back from the same cached bytes must stay exactly equal: compare those with ``torch.equal``."""
    a = np.asarray(got.detach().cpu().double() if hasattr(got, "detach") else got, dtype=np.float64)
    b = np.asarray(want.detach().cpu().double() if hasattr(want, "detach") else want, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN in different places"
    both = ~np.isnan(a)
    a, b = a[both], b[both]
    ulp = ulp_float16(np.maximum(np.abs(a), np.abs(b)))
    with np.errstate(invalid="ignore"):
        off = np.where(a == b, 0.0, np.abs(a - b) / ulp)  # in float16 steps; equal infinities are 0
    bad = ~(off <= steps)
    if bad.any():
        worst = int(np.argmax(np.where(bad, np.nan_to_num(off, nan=np.inf), -1)))
        raise AssertionError(f"{int(bad.sum())} of {a.size} values differ by more than {steps} float16 step(s); "
                             f"worst {float(a[worst])} vs {float(b[worst])} ({off[worst]:.2f} steps)")


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
