"""Report generation time per 1,000 neurons: CSV (baseline) vs the HTML report, live and reloaded.

A run with live handles is built from a random conv net over generated probe images (real
activations and 8x8 spatial maps); labels are random ranked concept lists (10 % no concept).
Also timed: a straightforward per-neuron card renderer (reads, thumbnails and spatial maps
per neuron, no cache) on a subset, to show what the shared thumbnails and batched maps save.

    .venv/bin/python benchmarks/report.py [--images 400] [--neurons 512 1024 2048]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def build_run(out: Path, n_images: int, layer_sizes: list[int], seed: int = 0):
    import torch

    from dissectkit.methods import LayerLabels
    from dissectkit.results import LabelSet, RunResult
    from dissectkit.types import Concept, ProbeItem

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)

    class Probe:
        has_masks = True

        def __len__(self):
            return n_images

        def __getitem__(self, i):
            r = np.random.default_rng(i)
            img = r.integers(0, 255, (96, 96), dtype=np.uint8)
            mask = np.zeros((96, 96), bool)
            mask[r.integers(0, 60):][:30, r.integers(0, 60):][:, :30] = True
            return ProbeItem(img, f"img{i:05d}", masks={"c0": mask})

    probe = Probe()
    images = torch.stack([torch.from_numpy(probe[i].image.astype(np.float32) / 255) for i in range(n_images)])[:, None]
    convs = {f"layer{j}": torch.nn.Conv2d(1, k, 12, stride=12) for j, k in enumerate(layer_sizes)}

    def maps(layer, idx):
        with torch.no_grad():
            return torch.relu(convs[layer](images[idx]))

    pooled = {layer: maps(layer, list(range(n_images))).mean(dim=(2, 3)) for layer in convs}
    concepts = [Concept(f"concept {c}", f"cat{c % 6}", f"sub{c % 17}") for c in range(200)]
    layers = {}
    for layer, k in zip(convs, layer_sizes, strict=True):
        neurons = []
        for _ in range(k):
            if rng.random() < 0.1:
                neurons.append([])
                continue
            picks = rng.choice(200, 5, replace=False)
            scores = np.sort(rng.random(5))[::-1]
            neurons.append([(concepts[c].text, float(s)) for c, s in zip(picks, scores, strict=True)])
        layers[layer] = LayerLabels(layer, "clip-dissect", {}, neurons)
    return RunResult(
        name="bench", out_dir=out, recipe={}, concepts=concepts, probe_ids=[f"img{i:05d}" for i in range(n_images)],
        label_sets=[LabelSet("d", "t", "clip-dissect", layers)], probe=probe,
        activations=lambda t, layer: pooled[layer], spatial_maps=lambda t, layer, idx: maps(layer, idx),
    )


def naive_cards(run, out: Path, limit: int, top: int = 5) -> int:
    """Per neuron: top-k by sorting, one spatial-map call per image, every thumbnail re-read and re-written."""
    import torch

    from dissectkit.imaging import to_pil

    out.mkdir(parents=True, exist_ok=True)
    done = 0
    for ls in run.label_sets:
        for layer in ls.layers:
            acts = run.activations(ls.target, layer)
            for k in range(acts.shape[1]):
                if done >= limit:
                    return done
                order = torch.argsort(acts[:, k], descending=True)[:top].tolist()
                for i in order:
                    m = run.spatial_maps(ls.target, layer, [i])[0, k]
                    pil = to_pil(run.probe[i].image)
                    pil.thumbnail((112, 112))
                    pil.save(out / f"{layer}_{k}_{i}.jpg", quality=85)
                    _ = (m - m.min()) / (m.max() - m.min() + 1e-12)
                done += 1
    return done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--neurons", type=int, nargs="+", default=[512, 1024, 2048])
    args = ap.parse_args()

    from dissectkit.report import neuron_rows, write_csv
    from dissectkit.report.html import HtmlOptions, write_html_report
    from dissectkit.results import RunResult

    tmp = Path(tempfile.mkdtemp(prefix="dk-bench-report-"))
    try:
        run = build_run(tmp / "run", args.images, args.neurons)
        total = sum(args.neurons)
        per_k = 1000.0 / total

        t = time.perf_counter()
        write_csv(neuron_rows(run), tmp / "csv" / "neurons.csv")
        t_csv = time.perf_counter() - t

        t = time.perf_counter()
        write_html_report(run, tmp / "html", HtmlOptions())
        t_html = time.perf_counter() - t

        (tmp / "run").mkdir(exist_ok=True)
        import json

        (tmp / "run" / "labels.json").write_text(json.dumps(run.labels_payload()))
        reloaded = RunResult.load(tmp / "run")
        t = time.perf_counter()
        write_html_report(reloaded, tmp / "html-reloaded", HtmlOptions())
        t_reloaded = time.perf_counter() - t

        subset = min(50, total)
        t = time.perf_counter()
        naive_cards(run, tmp / "naive", subset)
        t_naive = (time.perf_counter() - t) / subset * 1000.0

        files = sum(1 for p in (tmp / "html").rglob("*") if p.is_file())
        print(f"{total} neurons in {len(args.neurons)} layers, {args.images} probe images, 5 top images per card")
        print(f"{'what':44s} {'s / 1,000 neurons':>18s} {'x CSV':>8s}")
        rows = [
            ("csv (baseline)", t_csv * per_k),
            ("html report, live (thumbs, heatmaps, plots)", t_html * per_k),
            ("html report, reloaded run (no images)", t_reloaded * per_k),
            (f"naive per-neuron cards, images only ({subset})", t_naive),
        ]
        for name, sec in rows:
            print(f"{name:44s} {sec:18.3f} {sec / (t_csv * per_k):8.1f}")
        print(f"html live vs naive image cards: {t_naive / (t_html * per_k):.1f}x faster; {files} files written")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
