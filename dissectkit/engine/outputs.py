"""The run's result and the files every run directory holds (recipe.yaml, labels.json, manifest.json)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

from dissectkit.cache import ChunkedEntry, atomic_write_bytes
from dissectkit.context import BuildContext
from dissectkit.engine.extract import Extraction, _module_device
from dissectkit.engine.resolve import Resolved, TargetSlot
from dissectkit.recipe import Recipe
from dissectkit.results import LABELS, MANIFEST, LabelSet, RunResult


def versions(ctx: BuildContext) -> dict[str, Any]:
    import torch

    import dissectkit
    from dissectkit.plugins import get_host

    on_gpu = ctx.device.startswith("cuda") and torch.cuda.is_available()
    device_name = torch.cuda.get_device_name(torch.device(ctx.device)) if on_gpu else platform.processor() or platform.machine()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "dissectkit": dissectkit.__version__,
        "device": ctx.device,
        "device_name": device_name,
        "plugins": {r.distribution: r.version for r in get_host().records if r.ok},
    }


def run_stats(res: Resolved, ex: Extraction, timings: dict[str, float], processes: dict[str, int]) -> dict[str, Any]:
    """``manifest.json``'s stats: timings, sizes, chunks, skipped images, cache keys, versions."""
    return {
        "timings": timings,
        "n_images": len(res.probe),
        "chunks": {"computed": ex.computed_chunks, "total": ex.total_chunks},
        "skipped": {str(k): v for k, v in ex.skipped.items()},
        "cache": ex.cache_keys(),
        "processes": processes,
        "versions": versions(res.ctx),
    }


def make_run_result(res: Resolved, ex: Extraction, out: Path, probe_ids: list[str], label_sets: list[LabelSet],
                    measures: dict[str, Any], stats: dict[str, Any]) -> RunResult:
    """The ``RunResult`` reporters receive, with live handles over this run's cache and models.

    The one place that builds it; the handles are closures until the result holds data instead."""
    return RunResult(
        name=res.recipe.run_name,
        out_dir=out,
        recipe=res.recipe.resolved_dict(),
        concepts=res.concepts,
        probe_ids=probe_ids,
        label_sets=label_sets,
        layer_infos={t: s.layers for t, s in res.targets.items()},
        measures=measures,
        stats=stats,
        probe=res.probe,
        targets={t: s.instance for t, s in res.targets.items()},
        dissectors=res.dissectors,
        activations=lambda t, layer: _all_rows(ex.acts[(t, layer)]),
        image_embeddings=lambda d: _all_rows(ex.embeds[d]),
        spatial_maps=lambda t, layer, idx: compute_spatial_maps(res, res.targets[t], layer, list(idx)),
    )


def _all_rows(entry: ChunkedEntry):
    """All rows of an entry, skipped images included as zero rows (indices match ``probe_ids``)."""
    values, _valid = entry.read_all()
    return values


def compute_spatial_maps(res: Resolved, slot: TargetSlot, layer: str, indices: list[int]):
    """``[n, K, h, w]`` full-resolution maps of chosen probe images (report heatmaps), by running
    the target over them."""
    import torch

    from dissectkit.capture import Capture, first_tensor
    from dissectkit.layers import spatial_output

    if not indices:
        return torch.zeros(0)
    module, batch = slot.instance.module, res.recipe.runtime.batch_size
    out = []
    with Capture.named(module, [layer], lambda _n, o: spatial_output(first_tensor(o)).float()) as cap, torch.inference_mode():
        for b in range(0, len(indices), batch):
            x = torch.stack([slot.instance.preprocess(res.probe[i].image) for i in indices[b : b + batch]])
            module(x.to(_module_device(module, res.ctx.device)))
            out.append(cap.outputs[layer].cpu())
    return torch.cat(out)


def manifest(result: RunResult) -> dict[str, Any]:
    return {"name": result.name, "recipe": result.recipe, "stats": result.stats}


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=False, default=str) + "\n").encode())


def write_outputs(result: RunResult, recipe: Recipe) -> None:
    """The files every run directory holds: recipe.yaml, manifest.json and labels.json."""
    import yaml

    atomic_write_bytes(result.out_dir / "recipe.yaml", yaml.safe_dump(result.recipe, sort_keys=False).encode())
    write_json(result.out_dir / LABELS, result.labels_payload())
    write_json(result.out_dir / MANIFEST, manifest(result))
