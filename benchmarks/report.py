"""Report cost: the HTML report's share of the quickstart run, and its cost per shown neuron.

1. The quickstart (``recipes/quickstart.yaml``, 1,000 synthetic mammograms) run end to end with a
   fresh cache in a temporary directory: ``manifest.json`` timings, the report's share of the run's
   wall time (bar: <= 15 %) and its CPU share.
2. A synthetic run (random conv layers over generated images, activations in a real cache, random
   ranked labels with 10 % "no concept"): CSV (baseline) vs the HTML report at several neuron
   counts, per 1,000 neurons, and a naive per-neuron card renderer (per card: re-read and
   thumbnail each image, one forward pass per image) on a subset - what the shared, batched
   image pass saves.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/report.py [--images 400] [--neurons 512 1024 2048] [--skip-quickstart]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def quickstart(tmp: Path) -> None:
    """Wall-time share of the reporters in the quickstart run (manifest timings) with a fresh
    cache; the CPU share (all threads, ``time.process_time``) is printed too, since wall time on a
    shared machine depends on its load."""
    import dissectkit as dk

    os.environ["DISSECTKIT_CACHE"] = str(tmp / "cache")
    print("quickstart (recipes/quickstart.yaml: csv, json, html), cache in a fresh temporary directory")
    print(f"{'run':6s} {'wall s':>7s} {'report s':>9s} {'share':>6s} {'cpu s':>7s} {'html cpu':>9s} {'cpu share':>9s}   timings (s)")
    for name in ("fresh",):
        rec = dk.load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"output.dir={tmp / name}"])
        t, c = time.perf_counter(), time.process_time()
        result = dk.run(rec)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        timings = json.loads((tmp / name / "manifest.json").read_text())["stats"]["timings"]
        c = time.process_time()
        dk.create("reporter", "html").write(result, tmp / f"{name}-html")  # the same report again, for its CPU time
        html_cpu = time.process_time() - c
        shown = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
        print(f"{name:6s} {wall:7.2f} {timings['report']:9.2f} {timings['report'] / wall:6.1%} {cpu:7.2f} "
              f"{html_cpu:9.2f} {html_cpu / cpu:9.1%}   {shown}")


def build_run(out: Path, n_images: int, layer_sizes: list[int], seed: int = 0):
    """A live RunResult: conv layers as the target, activations in a real cache, random labels."""
    import torch
    from torch import nn

    from dissectkit.base.types import Concept, LayerInfo, ProbeItem
    from dissectkit.engine.cache import Cache
    from dissectkit.labelling.evidence import LayerLabels
    from dissectkit.results.evidence import build_run_evidence
    from dissectkit.results.run_result import LabelSet, RunResult

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
            y, x = r.integers(0, 60, 2)
            mask[y:y + 30, x:x + 30] = True
            return ProbeItem(img, f"img{i:05d}", masks={"concept 0": mask})

    class Fan(nn.Module):
        """Every layer reads the image: ``layer{j}`` = conv(1 -> K_j, 12, stride 12) + ReLU."""

        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleDict(OrderedDict((f"layer{j}", nn.Sequential(nn.Conv2d(1, k, 12, stride=12), nn.ReLU()))
                                                   for j, k in enumerate(layer_sizes)))

        def forward(self, x):
            return [conv(x) for conv in self.convs.values()]

    class Target:
        module = Fan().eval()

        @staticmethod
        def preprocess(image):
            return torch.from_numpy(np.asarray(image, np.float32) / 255.0)[None]

    probe, target = Probe(), Target()
    cache = Cache(out / "cache")
    entries = {}
    with torch.no_grad():
        for j in range(len(layer_sizes)):
            layer = f"convs.layer{j}"
            entry = cache.entry("acts", f"bench-{layer}", n_images, 256, {})
            for c in range(entry.n_chunks):
                rows = list(entry.chunk_range(c))
                x = torch.stack([target.preprocess(probe[i].image) for i in rows])
                acts = target.module.convs[f"layer{j}"](x).mean(dim=(2, 3))
                entry.write_chunk(c, acts, torch.ones(len(rows), dtype=torch.bool))
            entries[("t", layer)] = entry
    evidence = build_run_evidence(entries, {}, probe, {"t": target}, "cpu", {})
    concepts = [Concept(f"concept {c}", f"cat{c % 6}", f"sub{c % 17}") for c in range(200)]
    layers = {}
    for j, k in enumerate(layer_sizes):
        neurons = []
        for _ in range(k):
            if rng.random() < 0.1:
                neurons.append([])
                continue
            picks = rng.choice(200, 5, replace=False)
            scores = np.sort(rng.random(5))[::-1]
            neurons.append([(concepts[c].text, float(s)) for c, s in zip(picks, scores, strict=True)])
        layers[f"convs.layer{j}"] = LayerLabels(f"convs.layer{j}", "clip-dissect", {}, neurons)
    return RunResult(
        name="bench", out_dir=out, recipe={}, concepts=concepts, probe_ids=[f"img{i:05d}" for i in range(n_images)],
        label_sets=[LabelSet("d", "t", "clip-dissect", layers)],
        layer_infos={"t": [LayerInfo(f"convs.layer{j}", k, "conv") for j, k in enumerate(layer_sizes)]},
        probe=probe, top_images=evidence.top, evidence=evidence,
    )


def naive_cards(run, out: Path, limit: int, top: int = 5) -> int:
    """Per neuron: each top image re-read, thumbnailed and run through the target on its own."""
    import torch

    from dissectkit.imaging.raw import to_pil

    out.mkdir(parents=True, exist_ok=True)
    ev = run.evidence
    done = 0
    for ls in run.label_sets:
        for layer in ls.layers:
            for k, row in enumerate(run.top_images[ls.target][layer]):
                if done >= limit:
                    return done
                for i in row[:top]:
                    item = ev.read(i)
                    m = ev.spatial_maps(ls.target, [layer], torch.stack([ev.model_input(ls.target, item.image)]))[layer][0, k]
                    pil = to_pil(item.image)
                    pil.thumbnail((112, 112))
                    pil.save(out / f"{k}_{i}.jpg", quality=85)
                    _ = (m - m.min()) / (m.max() - m.min() + 1e-12)
                done += 1
    return done


def scaling(tmp: Path, n_images: int, sizes: list[int]) -> None:
    from dissectkit.report import neuron_rows, write_csv
    from dissectkit.report.html import HtmlOptions, write_html_report

    print(f"\nsynthetic run: {n_images} probe images, 5 top images per card, layers of {sizes} neurons")
    print(f"{'neurons':>8s} {'csv s/1k':>9s} {'html s/1k':>10s} {'x CSV':>7s} {'html cpu s':>11s} {'images':>7s}")
    run = None
    for n_layers in range(1, len(sizes) + 1):
        part = sizes[:n_layers]
        run = build_run(tmp / f"run{n_layers}", n_images, part)
        total = sum(part)
        t = time.perf_counter()
        write_csv(neuron_rows(run), tmp / f"csv{n_layers}" / "neurons.csv")
        t_csv = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        write_html_report(run, tmp / f"html{n_layers}", HtmlOptions())
        t_html, c_html = time.perf_counter() - t, time.process_time() - c
        images = sum(1 for _ in (tmp / f"html{n_layers}" / "report_files" / "thumbs").iterdir())
        per_k = 1000.0 / total
        print(f"{total:8d} {t_csv * per_k:9.3f} {t_html * per_k:10.3f} {t_html / t_csv:7.1f} {c_html:11.2f} {images:7d}")
    subset = 40
    t = time.perf_counter()
    naive_cards(run, tmp / "naive", subset)
    t_naive = (time.perf_counter() - t) / subset * 1000.0
    print(f"naive per-neuron cards ({subset} cards): {t_naive:.3f} s / 1,000 neurons; "
          f"the html report is {t_naive / (t_html * per_k):.1f}x faster per neuron")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--neurons", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--skip-quickstart", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dk-bench-report-"))
    try:
        if not args.skip_quickstart:
            quickstart(tmp / "qs")
        scaling(tmp / "synthetic", args.images, args.neurons)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
