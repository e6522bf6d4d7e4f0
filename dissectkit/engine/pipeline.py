"""``run``: resolve -> extract + embed (one cached pass) -> label -> outputs -> reporters.

Each stage is one function below; ``run`` only sequences them and records their timings.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from dissectkit.cache import Cache
from dissectkit.engine.distributed import World, world_from_env
from dissectkit.engine.extract import Extraction, extract_and_embed, finish_extraction
from dissectkit.engine.label import label_all
from dissectkit.engine.outputs import make_run_result, manifest, run_stats, write_json, write_outputs
from dissectkit.engine.resolve import Resolved, build_context, probe_ids, resolve
from dissectkit.engine.runtime import default_threads, intra_op_threads, progress_bar, seed_everything
from dissectkit.errors import DissectkitError
from dissectkit.recipe import Recipe
from dissectkit.results import LABELS, MANIFEST, RunResult


class _Timer:
    """Stage timings for ``manifest.json``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self) -> None:
                self.t0 = time.perf_counter()

            def __exit__(self, *_exc: Any) -> None:
                timer.timings[name] = time.perf_counter() - self.t0

        return _Stage()


def run(recipe: Recipe, progress: bool = False, console: Any = None, out_dir: str | Path | None = None) -> RunResult:
    """Run a validated recipe end to end and return its result (reporters have written).

    Under ``torchrun`` every rank calls this: extraction and labelling are shared out, rank 0
    writes the outputs, and every rank returns the same labels."""
    world = world_from_env()
    try:
        return _run(recipe, world, progress and world.is_main, console, out_dir)
    finally:
        world.close()


def _run(recipe: Recipe, world: World, progress: bool, console: Any, out_dir: str | Path | None) -> RunResult:
    from dissectkit.plugins import get_host

    rt = recipe.runtime
    timer = _Timer()
    with timer.stage("resolve"):
        res = resolve(recipe, build_context(recipe, local_rank=world.local_rank if world.distributed else None))
    threads = rt.threads or default_threads(world.local_size, rt.num_workers)
    with intra_op_threads(threads):
        seed_everything(rt.seed)
        cache = Cache(res.ctx.cache_dir)
        out = Path(out_dir) if out_dir else recipe.output_dir
        hook = get_host().pm.hook
        if world.is_main:
            out.mkdir(parents=True, exist_ok=True)
            hook.dissectkit_run_started(recipe=recipe, out_dir=out)
        bar = progress_bar(console) if progress else None
        with bar or nullcontext():
            with timer.stage("extract_embed"):
                ex = extract(res, cache, bar, world)
            with timer.stage("label"):
                label_sets, measures = label_all(res, ex, cache, bar, world)
        processes = {"world_size": world.size, "threads": threads}
        stats = run_stats(res, ex, timer.timings, processes)
        result = make_run_result(res, ex, out, probe_ids(res.probe, recipe.probe.name), label_sets, measures, stats)
        if world.is_main:
            write_outputs(result, recipe)
            with timer.stage("report"):
                report(res, result, out)
            write_json(out / MANIFEST, manifest(result))
            hook.dissectkit_run_finished(run_result=result)
    return result


def extract(res: Resolved, cache: Cache, progress: Any, world: World) -> Extraction:
    """This rank's share of the cached pass; then, with every rank done, the whole extraction."""
    ex = extract_and_embed(res, cache, progress, world)
    world.barrier()
    computed = sum(world.all_gather(ex.computed_chunks))
    ex = finish_extraction(ex, res.ctx.strict_data)
    ex.computed_chunks = computed
    return ex


def report(res: Resolved, result: RunResult, out: Path) -> None:
    """Every reporter writes; a reporter's unexpected failure names it (the labels are saved)."""
    for name, reporter in res.reporters.items():
        try:
            reporter.write(result, out)
        except DissectkitError:
            raise
        except Exception as exc:
            raise DissectkitError(
                f"Reporter '{name}' failed: {type(exc).__name__}: {exc}. The labels are already saved in {out / LABELS}."
            ) from exc
