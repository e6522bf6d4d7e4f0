"""Helpers of the test suite (imported as ``from support import ...``; the fixtures are in conftest.py):
small real recipes and images, float16 tolerance, entry-point discovery limited to one site folder."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest


@contextmanager
def entry_points_only_from(site: Path) -> Iterator[Path]:
    """The host discovers the ``dissectkit`` entry points of the distributions installed in ``site``
    and none of the environment's (``DISSECTKIT_BUILTINS_ONLY`` is lifted meanwhile); the process-wide
    host is rebuilt from the built-ins on the way out."""
    from dissectkit.host import manager

    def installed() -> list[importlib.metadata.EntryPoint]:
        found = [ep for dist in importlib.metadata.distributions(path=[str(site)]) for ep in dist.entry_points]
        return sorted(importlib.metadata.EntryPoints(found).select(group=manager.ENTRY_POINT_GROUP),
                      key=lambda ep: (ep.dist.name if ep.dist is not None else "", ep.name))

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv(manager.BUILTINS_ONLY_ENV, raising=False)
            mp.setattr(manager, "installed_entry_points", installed)
            yield site
    finally:
        manager.get_host(reload=True)


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
