"""``run``: resolve -> extract + embed (one cached pass) -> label -> outputs -> reporters, timed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DissectkitError
from dissectkit.engine.cache import Cache
from dissectkit.engine.distributed import World, world_from_env
from dissectkit.engine.extract import Extraction, extract_and_embed, finish_extraction
from dissectkit.engine.label import label_all
from dissectkit.engine.outputs import make_run_result, manifest, run_stats, write_json, write_outputs
from dissectkit.engine.preflight import preflight
from dissectkit.engine.reporting import Watch, reporter_pages
from dissectkit.engine.resolve import Resolved, build_context, probe_ids, resolve
from dissectkit.engine.rundir import RunDir, note_run
from dissectkit.engine.runtime import default_threads, intra_op_threads, progress_bar, seed_everything
from dissectkit.host.recipe import Recipe
from dissectkit.imaging.checks import reset_warnings
from dissectkit.results.evidence import build_run_evidence
from dissectkit.results.run_result import LABELS, MANIFEST, RunResult


class _Timer:
    """Stage timings for ``manifest.json``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - t0


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
    from dissectkit.host.manager import get_host

    rt = recipe.runtime
    timer = _Timer()
    hook = get_host().pm.hook
    final = Path(out_dir) if out_dir else recipe.output_dir
    reset_warnings()  # a new run: the raw-image warnings may be given again
    with timer.stage("resolve"):
        ctx = build_context(recipe, local_rank=world.local_rank if world.distributed else None)
        if world.is_main:
            preflight(recipe, ctx, final, console)
            note_run(final, ctx.cache_dir)
        res = resolve(recipe, ctx)
    threads = rt.threads or default_threads(world.local_size, rt.num_workers, device=res.ctx.device)
    with intra_op_threads(threads):
        seed_everything(rt.seed)
        cache = Cache(res.ctx.cache_dir)
        stage = RunDir(final, keep=(ctx.cache_dir,)) if world.is_main else None
        out = stage.begin() if stage else final
        if world.is_main:
            hook.dissectkit_run_started(recipe=recipe, out_dir=final)
            _stage_finished(hook, timer, "resolve", final)
        bar = progress_bar(console) if progress else None
        with bar or nullcontext():
            with timer.stage("extract_embed"):
                ex = extract(res, cache, bar, world)
            if world.is_main:
                _stage_finished(hook, timer, "extract_embed", final)
            with timer.stage("label"):
                label_sets, measures = label_all(res, ex, cache, bar, world)
                evidence = build_run_evidence(ex.acts, ex.embeds, res.probe, {t: s.instance for t, s in res.targets.items()},
                                              res.ctx.device, ex.skipped, ex.observations) if world.is_main else None
        processes = {"world_size": world.size, "threads": threads}
        stats = run_stats(res, ex, timer.timings, processes)
        result = make_run_result(res, out, probe_ids(res.probe, recipe.probe.name), label_sets, measures, stats, evidence)
        if stage is not None:
            _stage_finished(hook, timer, "label", final)
            result.pages = reporter_pages(res, result)
            write_outputs(result, recipe)
            with timer.stage("report"):
                report(res, result, stage, final)
            _stage_finished(hook, timer, "report", final)
            write_json(out / MANIFEST, manifest(result))
            result.out_dir = stage.commit()
            hook.dissectkit_run_finished(run_result=result)
    return result


def _stage_finished(hook: Any, timer: _Timer, stage: str, out_dir: Path) -> None:
    hook.dissectkit_stage_finished(stage=stage, seconds=timer.timings[stage], out_dir=out_dir)


def extract(res: Resolved, cache: Cache, progress: Any, world: World) -> Extraction:
    """This rank's share of the cached pass (watched by the reporters' pass observers); then, with
    every rank done, the whole extraction."""
    watch = Watch.for_run(res, world)
    ex = extract_and_embed(res, cache, progress, world, watch)
    world.barrier()
    computed = sum(world.all_gather(ex.computed_chunks))
    ex = finish_extraction(ex, res.ctx.strict_data)
    ex.computed_chunks = computed
    ex.observations = watch.settle(cache, ex)
    return ex


@contextmanager
def _keeping_labels(result: RunResult, stage: RunDir, what: str, saved: str) -> Iterator[None]:
    """A failure inside commits the staged run directory (the finished labels stay) and is
    re-raised naming ``what``; a ``DissectkitError`` passes through as it is."""
    try:
        yield
    except Exception as exc:
        result.out_dir = stage.commit()
        if isinstance(exc, DissectkitError):
            raise
        raise DissectkitError(f"{what} failed: {type(exc).__name__}: {exc}. {saved}") from exc


def report(res: Resolved, result: RunResult, stage: RunDir, final: Path) -> None:
    """Every reporter writes into the staged run directory, in the recipe's order; a reporter's
    failure keeps the finished labels and reports (the directory is committed) and names it."""
    for name, reporter in res.reporters.items():
        with _keeping_labels(result, stage, f"Reporter '{name}'", f"The labels are already saved in {final / LABELS}."):
            reporter.write(result, stage.staging)
