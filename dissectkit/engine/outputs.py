"""The run's result and the files every run directory holds (recipe.yaml, labels.json, manifest.json)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

from dissectkit.base.context import BuildContext
from dissectkit.engine.cache import atomic_write_bytes
from dissectkit.engine.extract import Extraction
from dissectkit.engine.resolve import Resolved
from dissectkit.host.recipe import Recipe
from dissectkit.results.evidence import RunEvidence
from dissectkit.results.run_result import LABELS, MANIFEST, LabelSet, RunResult


def versions(ctx: BuildContext) -> dict[str, Any]:
    import torch

    import dissectkit
    from dissectkit.host.manager import get_host

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
    """``manifest.json``'s stats: timings, sizes, chunks, skipped images (and the files the probe left
    out), cache keys, the licences of the components, versions."""
    return {
        "timings": timings,
        "n_images": len(res.probe),
        "chunks": {"computed": ex.computed_chunks, "total": ex.total_chunks},
        "skipped": {str(k): v for k, v in ex.skipped.items()},
        "probe_skipped": [list(pair) for pair in res.probe.skipped],
        "licences": res.licences,
        "cache": ex.cache_keys(),
        "processes": processes,
        "versions": versions(res.ctx),
    }


def make_run_result(res: Resolved, out: Path, probe_ids: list[str], label_sets: list[LabelSet],
                    measures: dict[str, Any], stats: dict[str, Any], evidence: RunEvidence | None) -> RunResult:
    """The ``RunResult`` reporters receive: data (labels, top images) and the run's cache-backed
    evidence (``None`` on the ranks that write nothing)."""
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
        top_images=evidence.top if evidence is not None else {},
        evidence=evidence,
    )


def manifest(result: RunResult) -> dict[str, Any]:
    return {"name": result.name, "recipe": result.recipe, "stats": result.stats, "pages": result.pages}


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=False, default=str) + "\n").encode())


def write_outputs(result: RunResult, recipe: Recipe) -> None:
    """The files every run directory holds: recipe.yaml, manifest.json and labels.json."""
    import yaml

    atomic_write_bytes(result.out_dir / "recipe.yaml", yaml.safe_dump(result.recipe, sort_keys=False).encode())
    write_json(result.out_dir / LABELS, result.labels_payload())
    write_json(result.out_dir / MANIFEST, manifest(result))
