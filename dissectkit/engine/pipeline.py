"""``run``: resolve -> extract + embed (one cached pass) -> label -> outputs -> reporters, timed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DissectkitError
from dissectkit.engine.cache import Cache, reset_verified
from dissectkit.engine.distributed import World, world_from_env
from dissectkit.engine.extract import Extraction, extract_and_embed, finish_extraction
from dissectkit.engine.label import label_all
from dissectkit.engine.outputs import make_run_result, manifest, run_stats, write_json, write_outputs
from dissectkit.engine.preflight import preflight
from dissectkit.engine.reporting import Watch, reporter_pages
from dissectkit.engine.resolve import Resolved, build_context, probe_ids, resolve
from dissectkit.engine.rundir import RunDir, is_run_dir, note_run
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


def run(recipe: Recipe, progress: bool = False, console: Any = None, out_dir: str | Path | None = None,
        wait: bool = False) -> RunResult:
    """Run a validated recipe end to end and return its result (reporters have written).

    Under ``torchrun`` every rank calls this: extraction and labelling are shared out, rank 0
    writes the outputs, and every rank returns the same labels. ``wait``: when another run is
    writing into the same output directory, wait for it instead of stopping at once."""
    world = world_from_env()
    try:
        return _run(recipe, world, progress and world.is_main, console, out_dir, wait)
    finally:
        world.close()


def _run(recipe: Recipe, world: World, progress: bool, console: Any, out_dir: str | Path | None, wait: bool) -> RunResult:
    from dissectkit.host.manager import get_host

    timer = _Timer()
    hook = get_host().pm.hook
    final = Path(out_dir) if out_dir else recipe.output_dir
    reset_warnings()  # a new run: the raw-image warnings may be given again
    reset_verified()  # and every cache file is checked again at its first read
    stage: RunDir | None = None
    try:
        with timer.stage("resolve"):
            ctx = build_context(recipe, local_rank=world.local_rank if world.distributed else None)
            if world.is_main:
                preflight(recipe, ctx, final, console)
                stage = RunDir(final, keep=(ctx.cache_dir,))
                stage.lock(wait=wait, notify=(lambda text: console.print(f"[yellow]note:[/] {text}")) if console else None)
                note_run(final, ctx.cache_dir)
            res = resolve(recipe, ctx)
        return _after_resolve(recipe, world, progress, console, final, timer, hook, ctx, res, stage)
    finally:
        if stage is not None:
            stage.discard()  # nothing left to discard once committed
            stage.release()


def _after_resolve(recipe: Recipe, world: World, progress: bool, console: Any, final: Path, timer: _Timer, hook: Any,
                   ctx: Any, res: Resolved, stage: RunDir | None) -> RunResult:
    rt = recipe.runtime
    threads = rt.threads or default_threads(world.local_size, rt.num_workers, device=res.ctx.device)
    with intra_op_threads(threads):
        seed_everything(rt.seed)
        cache = Cache(res.ctx.cache_dir)
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
            try:
                write_outputs(result, recipe)
                with timer.stage("report"):
                    report(res, result, stage, final)
                _stage_finished(hook, timer, "report", final)
                files = _written(stage.staging)
                write_json(out / MANIFEST, {**manifest(result), "files": files})
            except Exception as exc:
                _keep_what_finished(exc, result, stage, final)
                raise
            result.out_dir = stage.commit(files)
            hook.dissectkit_run_finished(run_result=result)
    return result


def _written(staging: Path) -> list[str]:
    """The top-level names a run wrote (kept in its manifest: the next run replaces only these)."""
    return sorted({p.name for p in staging.iterdir() if not p.name.startswith(".")} | {MANIFEST})


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


def _keep_what_finished(exc: BaseException, result: RunResult, stage: RunDir, final: Path) -> None:
    """A failure after labelling (a reporter, a full disk): a previous complete run stays untouched
    and this run's labels are kept beside it (or become the run directory when there is none); the
    exception gets a note saying where they are."""
    if not (stage.staging / LABELS).is_file():
        stage.discard()
        add_note(exc, f"Nothing of this run was published; {_previous(final)}")
        return
    files = _written(stage.staging)
    with suppress(OSError):
        write_json(stage.staging / MANIFEST, {**manifest(result), "files": files,
                                              "incomplete": f"{type(exc).__name__}: {exc}"})
    had_previous = is_run_dir(final)
    kept = stage.keep_incomplete()
    result.out_dir = kept
    if had_previous:
        note = (f"The previous run in {final} is untouched; this run's labels are kept in {kept / LABELS} "
                "(with the reports written before the failure).")
    else:
        note = f"The labels are saved in {kept / LABELS} (with the reports written before the failure)."
    add_note(exc, note)


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` (Python 3.10: the same ``__notes__`` list); the CLI prints notes."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = []
        try:
            exc.__notes__ = notes  # type: ignore[attr-defined]
        except AttributeError:
            return
    notes.append(note)


def _previous(final: Path) -> str:
    return f"the previous run in {final} is untouched." if is_run_dir(final) else f"nothing was written to {final}."


def report(res: Resolved, result: RunResult, stage: RunDir, final: Path) -> None:
    """Every reporter writes into the staged run directory, in the recipe's order. A failure is
    named: an environment error (a full disk) and a ``DissectkitError`` pass as they are, a plugin's
    exception too (the CLI names the plugin), anything else becomes a ``DissectkitError`` naming the
    reporter; :func:`_keep_what_finished` then keeps the finished labels."""
    from dissectkit.host.blame import blame

    for name, reporter in res.reporters.items():
        try:
            reporter.write(result, stage.staging)
        except (DissectkitError, OSError):
            raise
        except Exception as exc:
            if blame(exc) is not None:
                raise
            raise DissectkitError(f"Reporter '{name}' failed: {type(exc).__name__}: {exc}.") from exc
