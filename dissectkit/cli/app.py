"""The ``dissectkit`` command line (typer + rich). Heavy libraries load only inside commands."""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dissectkit.base.errors import DissectkitError, did_you_mean

app = typer.Typer(
    name="dissectkit",
    help="Label the neurons of vision models with words, from YAML recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cache_app = typer.Typer(help="Inspect or clear the activation / embedding cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)
_STATE: dict[str, Any] = {"strict": False}

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a recipe key: a.b=value (repeatable).")]


@app.callback()
def _main(
    strict_plugins: Annotated[bool, typer.Option("--strict-plugins", help="Fail if any plugin fails to load.")] = False,
) -> None:
    _STATE["strict"] = strict_plugins


def _host():
    from dissectkit.host.manager import get_host

    host = get_host(strict=_STATE["strict"])
    for rec in host.failed:
        err_console.print(
            f"[yellow]warning:[/] plugin '{rec.name}' ({rec.distribution}) failed to load: {escape(rec.error or '')}",
            highlight=False,
        )
    hint = host.disable_hint()
    if hint:
        err_console.print(f"[yellow]warning:[/] {escape(hint)}", highlight=False)
    return host


TrustOpt = Annotated[bool, typer.Option(
    "--trust-code", help="Run the Python callables the recipe names (a `module` target's factory); "
    "same as runtime.trust_code: true. Only for recipes you wrote or checked.")]


def _load(recipe: Path, overrides: list[str] | None, methods: list[str] | None = None, trust_code: bool = False):
    """The recipe with ``--set`` overrides; ``--method`` names replace its methods (keeping the
    params of a method it already names) and ``--trust-code`` sets ``runtime.trust_code``."""
    import dissectkit as dk

    overrides = list(overrides or [])
    if methods:
        overrides.append("methods=[" + ", ".join(json.dumps(m) for m in methods) + "]")
    if trust_code:
        overrides.append("runtime.trust_code=true")
    return dk.load_recipe(recipe, overrides)


@app.command()
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    method: Annotated[list[str] | None, typer.Option("--method", "-m", help="Run these methods instead of the recipe's (repeatable; a method the recipe names keeps its params).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: output.dir).")] = None,
    rows: Annotated[int, typer.Option(help="Neurons shown per layer in the summary.")] = 8,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")] = False,
    trust_code: TrustOpt = False,
    wait: Annotated[bool, typer.Option("--wait", help="If another run is writing into the same output directory, wait for it instead of stopping.")] = False,
) -> None:
    """Run a recipe: extract, embed (cached), label and report."""
    from dissectkit.engine import run as run_recipe

    _host()
    rec = _load(recipe, set_, method, trust_code)
    with _sigterm_as_interrupt():
        result = run_recipe(rec, progress=not quiet, console=err_console, out_dir=out, wait=wait)
    if not quiet:
        print_summary(result, rows)
    skipped = result.stats.get("skipped", {})
    if skipped:
        err_console.print(f"[yellow]{len(skipped)} probe image(s) skipped[/] (unreadable); reasons in {result.out_dir / 'manifest.json'}")
    left_out = result.stats.get("probe_skipped", [])
    if left_out:
        first = "; ".join(escape(f"{i}: {why}") for i, why in left_out[:3])
        err_console.print(f"[yellow]{len(left_out)} listed probe file(s) left out[/] ({first}{'; ...' if len(left_out) > 3 else ''}); "
                          f"all of them in {result.out_dir / 'manifest.json'} (probe_skipped)", highlight=False)
    console.print(f"Results written to [bold]{result.out_dir}[/]")


_SIGNALLED: set[int] = set()


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and ``docker stop`` send), handled as Ctrl-C is."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a run runs, SIGTERM stops it as SIGINT does: partial outputs are removed, the previous
    run stays, and the CLI says what was kept (exit 143)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _SIGNALLED.add(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_summary(result: Any, rows: int) -> None:
    """A rich table per (label set, layer); layers whose true concepts are known show every neuron
    with its truth, followed by the accuracy against it."""
    for ls in result.label_sets:
        target = (result.targets or {}).get(ls.target)
        for layer, ll in ls.layers.items():
            truth = target.ground_truth(layer) if target is not None else None
            shown = len(ll.neurons) if truth is not None else rows
            table = Table(title=f"{ls.target} · {layer} · {ls.dissector} · {ls.method}", title_justify="left")
            shown_labels = [c for ranked in ll.neurons[:shown] for c, _ in ranked[:1]] + list(truth or [])
            word = max((len(w) for text in shown_labels if text for w in str(text).split()), default=5)
            # labels wrap between words but are never cut; the further concepts give way first
            table.add_column("unit", justify="right", no_wrap=True)
            table.add_column("label", min_width=min(word, 24), overflow="fold")
            table.add_column("score", justify="right", no_wrap=True, min_width=5)
            table.add_column("next concepts", overflow="ellipsis", max_width=48)
            if truth is not None:
                table.add_column("truth", min_width=min(word, 24), overflow="fold")
            for unit, ranked in enumerate(ll.neurons[:shown]):
                label, score = (ranked[0][0], f"{ranked[0][1]:.3f}") if ranked else ("[dim](no concept)[/]", "")
                cells = [str(unit), label, score, ", ".join(c for c, _ in ranked[1:3])]
                if truth is not None:
                    hit = bool(ranked) and ranked[0][0] == truth[unit]
                    cells.append(("[green]" if hit else "[red]") + f"{truth[unit]}[/]")
                table.add_row(*cells)
            if len(ll.neurons) > shown:
                table.caption = f"{len(ll.neurons) - shown} more neurons in the results"
            console.print(table)
    for key, per_layer in result.measures.items():
        for layer, m in per_layer.items():
            parts = [f"{name} {m[name]:.3f}" for name in ("top1", "top5", "cos", "top1_group") if isinstance(m.get(name), float)]
            console.print(f"[bold]Accuracy against the truth[/] ({key} · {layer}, {m.get('n', '?')} neurons): " + ", ".join(parts))


@app.command()
def validate(recipe: RecipeArg, set_: SetOpt = None, trust_code: TrustOpt = False) -> None:
    """Check a recipe without running models or any code it names: schema, components, params, layer
    names, parameters bounded by the probe's size."""
    from dissectkit.engine.validate import validate_recipe

    _host()
    rec = _load(recipe, set_, trust_code=trust_code)
    warnings = validate_recipe(rec)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    console.print(f"[green]valid[/] {recipe}" + (f" ({len(warnings)} warning(s))" if warnings else ""))


@app.command()
def layers(
    recipe: RecipeArg,
    set_: SetOpt = None,
    all_: Annotated[bool, typer.Option("--all/--selected", help="Show every layer (the default), or only the selected ones.")] = True,
    trust_code: TrustOpt = False,
) -> None:
    """List each target's layers with neuron counts and output shapes (selected ones marked *)."""
    from dissectkit.engine.validate import target_layer_infos
    from dissectkit.nn.layers import select_layers

    _host()
    rec = _load(recipe, set_, trust_code=trust_code)
    for ref in rec.targets:
        infos = target_layer_infos(ref, rec)
        chosen = {i.name for i in select_layers(ref.layers, infos, target=f"target '{ref.display}'")}
        table = Table(title=f"target '{ref.display}' ({ref.name}): {len(infos)} layers, {len(chosen)} selected", title_justify="left")
        for col in ("", "layer", "kind", "neurons", "output shape"):
            table.add_column(col)
        for info in infos:
            if all_ or info.name in chosen:
                table.add_row("*" if info.name in chosen else "", info.name, info.kind, str(info.n_neurons), "x".join(map(str, info.shape or ())))
        console.print(table)


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show the loaded plugins, their components, and the ones that failed."""
    from dissectkit.host.manager import get_host

    host = get_host(strict=_STATE["strict"])
    if as_json:
        data = [
            {"name": r.name, "distribution": r.distribution, "version": r.version, "module": r.module, "ok": r.ok,
             "disabled": r.disabled, "error": r.error, "errors": r.errors, "warnings": r.warnings,
             "components": r.components}
            for r in host.records
        ]
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
        return
    table = Table(title="dissectkit plugins", title_justify="left")
    for col in ("plugin", "distribution", "version", "status", "components"):
        table.add_column(col)
    for r in host.records:
        if r.disabled:
            status = "[yellow]disabled[/] (DISSECTKIT_DISABLE_PLUGINS)"
        elif r.ok:
            status = "[green]ok[/]" + "".join(f"\n[yellow]- {escape(w)}[/]" for w in r.warnings)
        else:
            status = "[red]failed[/]\n" + "\n".join(f"- {escape(e)}" for e in r.errors)
        table.add_row(r.name, r.distribution, r.version, status, ", ".join(r.components))
    console.print(table)
    hint = host.disable_hint()
    if hint:
        err_console.print(f"[yellow]warning:[/] {escape(hint)}", highlight=False)


@app.command("list")
def list_(
    kind: Annotated[str | None, typer.Argument(help="One of: dissector, target, probe, concepts, similarity, method, reporter.")] = None,
    names: Annotated[bool, typer.Option("--names", help="Only the names, one a line (for scripts).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (licence, masks of probes).")] = False,
) -> None:
    """List the registered components (of one kind)."""
    import dissectkit as dk

    _host()
    if names:
        sys.stdout.write("".join(f"{n}\n" for n in dk.list_components(kind, names=True)))
        return
    specs = dk.list_components(kind)
    if as_json:
        rows = [{"kind": s.kind, "name": s.name, "distribution": s.distribution, "plugin": s.plugin,
                 "description": s.description, "licence": s.licence, **({"masks": s.masks} if s.kind == "probe" else {})}
                for s in specs]
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    probes = kind in (None, "probe")
    table = Table(title="dissectkit components", title_justify="left")
    for col in ("kind", "name", "from", "description", "licence", *(("masks",) if probes else ())):
        table.add_column(col)
    for spec in specs:
        masks = (spec.masks if spec.kind == "probe" else "",) if probes else ()
        table.add_row(spec.kind, spec.name, spec.distribution, spec.description, spec.licence or "", *masks)
    console.print(table)


@app.command()
def schema(out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None) -> None:
    """Print the recipe JSON Schema, with the params of every installed component."""
    from dissectkit.engine.validate import recipe_json_schema

    _host()
    text = json.dumps(recipe_json_schema(), indent=1)
    if out:
        out.write_text(text + "\n")
        console.print(f"JSON Schema written to {out}")
    else:
        sys.stdout.write(text + "\n")


@app.command()
def fetch(
    url: Annotated[str, typer.Argument(help="The file's URL (as in a recipe's {url, sha256} weights).", show_default=False)],
    sha256: Annotated[str, typer.Option("--sha256", help="The file's expected sha256 (64 hex digits).", show_default=False)],
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Cache directory (default: DISSECTKIT_CACHE or ~/.cache/dissectkit).")] = None,
) -> None:
    """Download a {url, sha256} weights file into the cache, where offline runs find it."""
    from pydantic import ValidationError

    from dissectkit.base.context import BuildContext, default_cache_dir
    from dissectkit.base.params import format_validation_error
    from dissectkit.base.weights import UrlRef, resolve

    try:
        ref = UrlRef(url=url, sha256=sha256)
    except ValidationError as exc:
        raise DissectkitError(format_validation_error(exc, "fetch arguments")) from None
    path = resolve(ref, BuildContext(offline=False, cache_dir=cache_dir or default_cache_dir()), what="file")
    console.print(f"Verified and cached: [bold]{path}[/]")


CacheDirOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Cache directory (default: DISSECTKIT_CACHE or ~/.cache/dissectkit).")]


def _cache(cache_dir: Path | None):
    from dissectkit.base.context import default_cache_dir
    from dissectkit.engine.cache import Cache

    return Cache(cache_dir or default_cache_dir())


@cache_app.command("ls")
def cache_ls(cache_dir: CacheDirOpt = None) -> None:
    """List cache entries with their size."""
    cache = _cache(cache_dir)
    table = Table(title=f"cache {cache.root}", title_justify="left")
    for col in ("kind", "key", "what", "chunks", "MB"):
        table.add_column(col)
    total = 0
    for e in cache.entries():
        meta = e["meta"]
        what = " ".join(f"{k}={meta[k]}" for k in ("target", "layer", "dissector", "probe") if k in meta)
        table.add_row(e["kind"], e["key"][:12], what, str(e["chunks"]), f"{e['bytes'] / 1e6:.1f}")
        total += e["bytes"]
    console.print(table)
    console.print(f"{total / 1e6:.1f} MB in all")


@cache_app.command("clear")
def cache_clear(
    cache_dir: CacheDirOpt = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind: acts, spatial, masks, embeds or texts.")] = None,
) -> None:
    """Delete cache entries."""
    from dissectkit.engine.cache import KINDS

    if kind is not None and kind not in KINDS:
        raise DissectkitError(f"Unknown cache kind {kind!r}; use one of {', '.join(KINDS)}.{did_you_mean(kind, KINDS)}")
    removed = _cache(cache_dir).clear(kind)
    console.print(f"Removed {removed} cache entr{'y' if removed == 1 else 'ies'}.")


@cache_app.command("verify")
def cache_verify(
    cache_dir: CacheDirOpt = None,
    repair: Annotated[bool, typer.Option("--repair", help="Move the files that fail aside (quarantine/) and remove orphan temporaries.")] = False,
) -> None:
    """Check every cache file against its checksum (exit 1 when one fails and --repair is not given)."""
    cache = _cache(cache_dir)
    checked, problems, legacy = cache.verify(repair=repair)
    for p in problems:
        state = " [green](moved aside)[/]" if p.repaired and not p.problem.startswith("an orphan") else " [green](removed)[/]" if p.repaired else ""
        err_console.print(f"[red]bad[/] {escape(str(p.path))}: {escape(p.problem)}{state}", highlight=False)
    if legacy:
        console.print(f"{len(legacy)} entr{'y' if len(legacy) == 1 else 'ies'} written by an older dissectkit (no checksums, "
                      "no longer read by runs): `dissectkit cache clear` removes them.")
    quarantined = cache.quarantined()
    if quarantined:
        console.print(f"{len(quarantined)} file(s) moved aside earlier are in {cache.root / 'quarantine'} (never deleted by dissectkit).")
    unrepaired = [p for p in problems if not p.repaired]
    console.print(f"Checked {checked} cache file(s) in {cache.root}: {len(problems)} problem(s)"
                  + (f", {len(problems) - len(unrepaired)} repaired" if repair else "") + ".")
    if unrepaired:
        console.print("Run `dissectkit cache verify --repair` to move them aside; the next run computes them again.")
        raise typer.Exit(1)


def _register_extensions() -> None:
    from dissectkit.cli.commands import COMMAND_MODULES

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_extensions()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors print a message and exit 2, never a traceback; usage errors
    are typer/click's own message (exit 2); Ctrl-C says what was kept and how to resume (exit 130;
    SIGTERM the same, exit 143). An exception raised in a plugin's code names the plugin (exit 1); any
    other unexpected one is an internal error (exit 1); both write the traceback to a log file."""
    from dissectkit.engine.rundir import discard_unfinished

    args = list(sys.argv[1:] if argv is None else argv)
    _SIGNALLED.clear()
    _show_warnings()
    try:
        result = app(args=args, prog_name="dissectkit", standalone_mode=False)
        if result == INTERRUPTED:  # typer turns KeyboardInterrupt (Ctrl-C) into this exit code
            discard_unfinished()
            return _interrupted(args)
        return int(result) if isinstance(result, int) else 0
    except DissectkitError as exc:
        discard_unfinished()
        log = _log_file(exc, args) if exc.exit_code == 1 else None
        err_console.print("[bold red]error:[/] " + escape(str(exc)) + _notes(exc) + _plugin_line(exc)
                          + (escape(f"\nThe traceback is in {log}.") if log else ""), highlight=False)
        return exc.exit_code
    except CLICK_EXCEPTIONS as exc:  # typer's bundled click raises its own classes
        exc.show()
        return exc.exit_code
    except (KeyboardInterrupt, *ABORTS):
        discard_unfinished()
        return _interrupted(args)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            return _unexpected(exc, args)
        discard_unfinished()
        where = f" ({exc.filename})" if exc.filename else ""
        err_console.print(
            f"[bold red]error:[/] {escape(exc.strerror or str(exc))}{escape(where)}. Finished chunks are cached; "
            "free some space or fix the permissions, then run the same command again." + _notes(exc) + _kept(exc),
            highlight=False,
        )
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI never prints a bare traceback
        discard_unfinished()
        return _unexpected(exc, args)


class _WarningHandler(logging.Handler):
    """dissectkit's log warnings on the terminal as ``warning: ...`` (the CLI's own format)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            err_console.print("[yellow]warning:[/] " + escape(record.getMessage()), highlight=False)
        except Exception:  # noqa: BLE001 - a warning must never break a run
            self.handleError(record)


def _show_warnings() -> None:
    logger = logging.getLogger("dissectkit")
    if not any(isinstance(h, _WarningHandler) for h in logger.handlers):
        handler = _WarningHandler(logging.WARNING)
        logger.addHandler(handler)


def _plugin_line(exc: BaseException) -> str:
    """For a plugin's failure (``PluginComponentError``, also as the cause): the plugin's version."""
    from dissectkit.base.errors import PluginComponentError
    from dissectkit.host.blame import blame

    cause = exc if isinstance(exc, PluginComponentError) else exc.__cause__
    if not isinstance(cause, PluginComponentError):
        return ""
    found = blame(cause)
    return escape(f"\nIt failed in {found.who}.") if found is not None else ""


def _notes(exc: BaseException) -> str:
    """What the engine added to an exception (where the finished labels are, ...), one per line."""
    return "".join("\n" + escape(str(n)) for n in getattr(exc, "__notes__", ()) or ())


def _kept(exc: BaseException) -> str:
    """For a failed run without a note of its own: the previous results are untouched."""
    from dissectkit.engine.rundir import CURRENT, is_run_dir

    if getattr(exc, "__notes__", None) or CURRENT.out_dir is None:
        return ""
    out = CURRENT.out_dir
    state = "its previous results are untouched" if is_run_dir(out) else "nothing was written there"
    return escape(f"\nThe run directory {out} was not replaced ({state}).")


def _unexpected(exc: BaseException, args: list[str]) -> int:
    """A plugin's exception names the plugin; anything else is dissectkit's internal error."""
    if os.environ.get("DISSECTKIT_DEBUG"):
        raise exc
    from dissectkit.host.blame import blame

    log = _log_file(exc, args)
    found = blame(exc)
    trace = f" The traceback is in {log}." if log else ""
    if found is not None:
        err_console.print("[bold red]error:[/] " + escape(found.message(exc, log)) + _notes(exc) + _kept(exc), highlight=False)
        return 1
    err_console.print(
        f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}{_notes(exc)}{_kept(exc)}\n"
        + escape(f"This is a bug in dissectkit: please report it.{trace} Finished work is cached."),
        highlight=False,
    )
    return 1


def _log_file(exc: BaseException, args: list[str]) -> str | None:
    """Write the traceback (and the command, versions) to a log file under the cache's ``logs/``
    (else the temporary directory); its path, or ``None`` when nothing could be written."""
    import platform
    import tempfile
    import time

    import dissectkit
    from dissectkit.base.context import default_cache_dir
    from dissectkit.engine.rundir import CURRENT
    from dissectkit.host.blame import traceback_text

    text = (f"dissectkit {dissectkit.__version__}, Python {platform.python_version()}, {platform.platform()}\n"
            f"command: dissectkit {' '.join(args)}\n\n{traceback_text(exc)}")
    name = f"dissectkit-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in ((CURRENT.cache_dir or default_cache_dir()) / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8", errors="backslashreplace")
            return str(folder / name)
        except OSError:
            continue
    return None


def _interrupted(args: list[str]) -> int:
    import shlex

    from dissectkit.engine.rundir import interrupted_message

    term = bool(_SIGNALLED)
    what = "Terminated (SIGTERM)." if term else "Interrupted."
    err_console.print(escape(interrupted_message("dissectkit " + shlex.join(args), what=what)), highlight=False)
    return TERMINATED if term else INTERRUPTED


def _click_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """click's exception classes and typer's bundled copies of them (typer >= 0.20 vendors click)."""
    aborts = (click.exceptions.Abort, typer.Abort)
    try:
        from typer._click.exceptions import ClickException as Bundled
    except ImportError:  # an older typer that raises click's own
        return (click.exceptions.ClickException,), aborts
    return (click.exceptions.ClickException, Bundled), aborts


CLICK_EXCEPTIONS, ABORTS = _click_classes()
INTERRUPTED = 130
TERMINATED = 143
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}


def entry() -> None:
    """``python -m dissectkit`` (and under ``torchrun``): ranks other than 0 print nothing on stdout."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    sys.exit(main())


if __name__ == "__main__":
    entry()
