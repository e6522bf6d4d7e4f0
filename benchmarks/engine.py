"""Engine benchmark: cold vs warm run, extraction vs a bare forward loop, CLI start-up.

    .venv/bin/python benchmarks/engine.py [--images 256] [--model resnet18] [--size 160]

Prints, in one run:
- cold vs warm time of the extraction + embedding stage of a recipe (warm reuses the cache);
- the extraction stage (hooks, pooling, chunked cache writes) vs a bare loop running the same
  forward passes on the same DataLoader batches;
- the CLI's start-up time (`dissectkit --help`) next to a bare `python -c pass`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_inputs(tmp: Path, n_images: int) -> tuple[Path, Path, Path]:
    import open_clip
    import torch
    from conftest import TINY_OPENCLIP_CFG, write_images
    from safetensors.torch import save_file

    images = tmp / "images"
    write_images(images, n_images, size=(192, 160))
    clip_dir = tmp / "clip"
    clip_dir.mkdir()
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_OPENCLIP_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(clip_dir / "open_clip_model.safetensors"))
    (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPENCLIP_CFG}))
    concepts = tmp / "concepts.txt"
    concepts.write_text("\n".join(f"concept {i}" for i in range(50)) + "\n")
    return images, clip_dir, concepts


def write_recipe(tmp: Path, images: Path, clip_dir: Path, concepts: Path, model: str, size: int, workers: int) -> Path:
    path = tmp / "bench.yaml"
    path.write_text(f"""\
dissector: {{name: open-clip, params: {{pretrained: "local-dir:{clip_dir}"}}}}
target: {{name: timm, params: {{model: {model}, input_size: [3, {size}, {size}]}}, layers: [layer1, layer2, layer3, layer4]}}
probe: {{name: image-folder, params: {{root: "{images}"}}}}
concepts: {{name: text, params: {{path: "{concepts}"}}}}
method: {{name: clip-dissect, params: {{similarity: cos}}}}
output: {{dir: "{tmp / 'out'}", reporters: [csv]}}
runtime: {{device: cpu, batch_size: 32, num_workers: {workers}, cache_dir: "{tmp / 'cache'}", chunk_images: 64}}
""")
    return path


def cold_warm(recipe_path: Path) -> tuple[float, float]:
    import dissectkit as dk

    recipe = dk.load_recipe(recipe_path)
    cold = dk.run(recipe).stats["timings"]["extract_embed"]
    warm = dk.run(recipe).stats["timings"]["extract_embed"]
    return cold, warm


def extraction_vs_bare(recipe_path: Path, tmp: Path, repeats: int = 2) -> tuple[float, float]:
    import torch
    from torch.utils.data import DataLoader

    import dissectkit as dk
    from dissectkit.engine.cache import Cache
    from dissectkit.engine.extract import ChunkPlan, _chunk_batches, _collate, _PassDataset, extract_and_embed
    from dissectkit.engine.resolve import resolve

    recipe = dk.load_recipe(recipe_path)
    res = resolve(recipe)
    res.dissectors = {}  # the target's extraction alone
    slot = next(iter(res.targets.values()))
    n, bs, chunk = len(res.probe), recipe.runtime.batch_size, recipe.runtime.chunk_images

    def bare() -> float:
        ranges = [range(c, min(n, c + chunk)) for c in range(0, n, chunk)]
        plans = {c: ChunkPlan({slot.label: [i.name for i in slot.layers]}, [], []) for c in range(len(ranges))}
        loader = DataLoader(_PassDataset(res, plans, chunk), batch_sampler=_chunk_batches(ranges, bs),
                            num_workers=recipe.runtime.num_workers, collate_fn=_collate)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _idx, _ok, inputs, _masks, _r in loader:
                slot.instance.module(inputs[f"t:{slot.label}"])
        return time.perf_counter() - t0

    def ours(i: int) -> float:
        t0 = time.perf_counter()
        extract_and_embed(res, Cache(tmp / f"cache-extract-{i}"))
        return time.perf_counter() - t0

    bare(), ours(-1)  # warm up threads, allocator, file cache
    b = min(bare() for _ in range(repeats))
    o = min(ours(i) for i in range(repeats))
    return o, b


def startup() -> tuple[float, float]:
    def best(cmd: list[str]) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        return min(times)

    return best([sys.executable, "-m", "dissectkit.cli", "--help"]), best([sys.executable, "-c", "pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        images, clip_dir, concepts = make_inputs(tmp, args.images)
        recipe = write_recipe(tmp, images, clip_dir, concepts, args.model, args.size, args.workers)
        cold, warm = cold_warm(recipe)
        print(f"extract+embed  cold {cold:8.3f} s   warm {warm:8.4f} s   warm is {cold / warm:8.1f}x faster  (need >= 20x)")
        ours, bare = extraction_vs_bare(recipe, tmp)
        print(f"extraction     ours {ours:8.3f} s   bare loop {bare:8.3f} s   ratio {ours / bare:6.3f}  (need <= 1.15)")
        cli, py = startup()
        print(f"CLI start-up   dissectkit --help {cli:6.3f} s   python -c pass {py:6.3f} s")


if __name__ == "__main__":
    main()
