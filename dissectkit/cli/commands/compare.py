"""``dissectkit compare A B [C...] [--out DIR]``: labels of finished runs side by side."""

from __future__ import annotations

from pathlib import Path

import typer


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or x != x else f"{x:.{digits}g}" if abs(x) >= 1000 else f"{x:.{digits}f}"


def compare_command(
    runs: list[Path] = typer.Argument(..., help="finished run directories (each holds labels.json)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder for compare.html and the CSV tables "
                                    "(default: compare-<run>-<run>... beside the first run)"),
) -> None:
    """Compare label sets per layer: top-1 agreement, top-5 Jaccard, Cohen's kappa, global threshold,
    and rank them per layer by the quality of their labels (simulation correlation, top AUC, z).

    With one run directory, its label sets (several dissectors/targets/methods) are compared pairwise.
    """
    from rich.console import Console
    from rich.table import Table

    from dissectkit.base.errors import DissectkitError
    from dissectkit.report.compare import (
        compare_runs,
        quality_ranking,
        write_html,
        write_quality_ranking,
        write_tables,
    )
    from dissectkit.results.run_result import RunResult

    loaded = [RunResult.load(p) for p in runs]
    out = out or default_out(runs)
    if out.exists() and not out.is_dir():
        raise DissectkitError(f"--out {out} exists and is not a folder. Give a new or existing folder for compare.html "
                              "and the CSV tables.")
    result = compare_runs(loaded)
    out.mkdir(parents=True, exist_ok=True)
    tables = write_tables(result, out)
    ranking = quality_ranking(loaded)
    tables["quality"] = write_quality_ranking(ranking, out)
    html = write_html(result, out, loaded, ranking)
    console = Console()
    for p in result:
        table = Table(title=f"{p.a.name}  vs  {p.b.name}  (layers matched by {p.matched_by})", title_justify="left")
        for col in ("layer", "neurons", "top-1 agr.", "top-5 Jacc.", "kappa", "thr A", "thr B", "global",
                    "above A", "above B", "A only", "B only"):
            table.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")  # never "lay…"
        for lc in p.layers:
            table.add_row(lc.name, str(lc.n), _fmt(lc.top1_agreement), _fmt(lc.top5_jaccard), _fmt(lc.kappa),
                          _fmt(lc.threshold_a), _fmt(lc.threshold_b), _fmt(lc.global_threshold),
                          str(lc.above_a["total"]["all"]), str(lc.above_b["total"]["all"]),
                          str(len(lc.only_a)), str(len(lc.only_b)))
        console.print(table)
        if not p.layers:
            console.print("[yellow]No layer in common.[/]")
        for note in p.skipped:
            console.print(f"[yellow]skipped[/] {note}")
    _print_ranking(console, ranking)
    console.print(f"Wrote {html} and {', '.join(str(t) for t in tables.values())}")


def default_out(runs: list[Path]) -> Path:
    """``compare-<a>-<b>...`` beside the first run (``runs/compare-a-b`` for ``runs/a runs/b``)."""
    names = "-".join(p.resolve().name or "run" for p in runs)
    return runs[0].resolve().parent / f"compare-{names}"


def _print_ranking(console, ranking: list[dict]) -> None:
    """Label sets ranked per layer by their labels' quality (no ground truth needed)."""
    from rich.table import Table

    from dissectkit.report.compare import GROUNDING_MEANS

    table = Table(title="Label quality per layer (ranked by mean simulation correlation; and by mean stability)",
                  title_justify="left")
    grounded = any(r.get("grounding_iou") is not None for r in ranking)  # probes with masks: where labels land
    for col in ("target", "layer", "rank", "label set", "sim. corr.", "top AUC", "z", "supported", "stability",
                "stab. rank", *(("grounding IoU", "above chance", "pointing", "above chance ") if grounded else ())):
        table.add_column(col, justify="left" if col in ("target", "layer", "label set") else "right", overflow="fold")
    for r in ranking:
        share = r.get("label_supported_share")
        table.add_row(r["target"], r["layer"], str(r["rank"]), r["label_set"], _fmt(r["sim_corr"]), _fmt(r["top_auc"]),
                      _fmt(r["sim_z"]), "—" if share is None else f"{share:.0%}", _fmt(r.get("stability")),
                      "—" if r.get("rank_stability") is None else str(r["rank_stability"]),
                      *((_fmt(r.get(c)) for c in GROUNDING_MEANS) if grounded else ()))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the ``dissectkit`` app."""
    app.command("compare")(compare_command)
