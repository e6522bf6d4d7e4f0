"""``dissectkit evaluate RUN_DIR --truth truth.csv``: the published evaluation metrics of a finished
run's labels (docs/methods.md, "Evaluation as published"); writes ``<run>/evaluation.csv`` and the
evaluation section of its HTML report."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import typer

from dissectkit.base.errors import DataError

ENCODER_HELP = ("a dissector's text side, NAME or NAME:{json params} (e.g. open-clip:'{\"model\": \"ViT-B-16\", "
                "\"pretrained\": \"openai\"}'), or a local sentence-transformers folder")


def text_encoder(spec: str, device: str = "cpu") -> Any:
    """``list[str] -> [n, D]`` from ``NAME``, ``NAME:{json params}`` (a registered dissector's
    ``encode_texts``, built offline) or a sentence-transformers folder (MPNet)."""
    import dissectkit as dk
    from dissectkit.base.context import BuildContext
    from dissectkit.host.manager import get_host
    from dissectkit.labelling.evaluation import sentence_encoder

    name, _, raw = spec.partition(":")
    if name not in get_host().registry.names("dissector"):
        if Path(spec).expanduser().exists() or "/" in spec:
            return sentence_encoder(Path(spec).expanduser(), device)
        get_host().registry.get("dissector", name)  # the error lists the dissectors
    try:
        params = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise DataError(f"Text encoder {spec!r}: its params are not JSON ({exc.msg}); write NAME:{{\"key\": value}}.") from None
    dissector = dk.create("dissector", name, _ctx=BuildContext(device=device, offline=True), **params)
    return dissector.encode_texts


def rescored_ranks(result: Any, truth: Any) -> dict[tuple[str, str, str, str], dict[int, int | None]]:
    """The truth's rank among *every* concept for the clip-dissect label sets whose stored lists are
    shorter than the concept set: the run's recipe is run again from its cache (nothing is extracted
    again) on the truth's layers only, with ``top_m`` = the number of concepts, into a temporary folder."""
    import dissectkit as dk
    from dissectkit.host.recipe import recipe_from_dict
    from dissectkit.labelling.column_groups import groups

    n_concepts = len(result.concepts)
    short = {ls.key for ls in result.label_sets
             if any(len(r) < n_concepts for layer, ll in ls.layers.items() if layer in truth.layers
                                  for u, r in enumerate(ll.neurons) if u in truth.of(ls.target, layer))}
    if not short or not result.recipe:
        return {}
    recipe = json.loads(json.dumps(result.recipe))
    for m in recipe.get("methods") or []:
        if m.get("name") == "clip-dissect":
            m["params"] = {**(m.get("params") or {}), "top_m": n_concepts}
    kept = []
    for t in recipe.get("targets") or []:
        label = t.get("label") or t["name"]
        layers = sorted({layer for ls in result.label_sets if ls.target == label for layer in ls.layers} & truth.layers)
        if layers:
            kept.append({**t, "layers": layers})
    if not kept:
        return {}
    recipe["targets"] = kept
    with tempfile.TemporaryDirectory(prefix="dissectkit-rescore-") as tmp:
        recipe["output"] = {"dir": str(Path(tmp) / "run"), "reporters": [], "columns": {g.name: False for g in groups()}}
        rerun = dk.run(recipe_from_dict(recipe))
    ranks: dict[tuple[str, str, str, str], dict[int, int | None]] = {}
    for ls in rerun.label_sets:
        for layer, ll in ls.layers.items():
            wanted = truth.of(ls.target, layer)
            if not wanted or not any(len(r) >= n_concepts for r in ll.neurons):
                continue
            out = {}
            for u, labels in wanted.items():
                names = [c for c, _ in ll.neurons[u]] if u < len(ll.neurons) else []
                out[u] = names.index(labels[0]) + 1 if labels[0] in names else None
            ranks[(ls.dissector, ls.target, ls.method, layer)] = out
    return ranks


def evaluate_run(result: Any, truth: Any, encoders: dict[str, Any], rescore: bool = True) -> list[dict[str, Any]]:
    """One row of metrics per (label set, layer with a truth)."""
    from dissectkit.labelling.evaluation import evaluate_layer

    unknown = truth.layers - {layer for ls in result.label_sets for layer in ls.layers}
    if unknown:
        raise DataError(f"The truth names layer(s) {', '.join(sorted(map(repr, unknown)))} that run '{result.name}' did not "
                        f"label; its layers: {', '.join(sorted({la for ls in result.label_sets for la in ls.layers}))}.")
    ranks = rescored_ranks(result, truth) if rescore else {}
    rows = []
    for ls in result.label_sets:
        for layer, ll in ls.layers.items():
            wanted = truth.of(ls.target, layer)
            if not wanted:
                continue
            key = (ls.dissector, ls.target, ls.method, layer)
            metrics = evaluate_layer(ll, wanted, encoders, ranks.get(key))
            rows.append({"dissector": ls.dissector, "target": ls.target, "method": ls.method, "layer": layer, **metrics})
    return rows


def evaluate_command(
    run_dir: Path = typer.Argument(..., help="a finished run directory (holds labels.json)"),
    truth: Path = typer.Option(..., "--truth", help="CSV with columns layer, unit, label (several: a|b), optional target"),
    clip: str = typer.Option(None, "--clip", help=f"CLIP text encoder (CLIP ViT-B/16 as published): {ENCODER_HELP}"),
    mpnet: str = typer.Option(None, "--mpnet", help=f"MPNet sentence encoder (all-mpnet-base-v2 as published): {ENCODER_HELP}"),
    medclip: str = typer.Option(None, "--medclip", help=f"MedCLIP text encoder (MAMMI's): {ENCODER_HELP}"),
    rescore: bool = typer.Option(True, help="rank the truth among every concept by re-running the labelling from the cache "
                                            "when the stored lists are shorter than the concept set"),
    device: str = typer.Option("cpu", help="device of the text encoders"),
) -> None:
    """Top-1/top-5 accuracy, CLIP / MPNet cosine, rank of the truth (CLIP-Dissect) and hit rate, precision,
    recall, F1 and pairwise MedCLIP / CLIP / MPNet cosine (MAMMI), as the published code computes them."""
    from rich.console import Console
    from rich.table import Table

    from dissectkit.labelling.evaluation import COLUMNS, read_truth, write_evaluation
    from dissectkit.report.html import EVALUATION, update_evaluation_section
    from dissectkit.results.run_result import RunResult

    result = RunResult.load(run_dir)
    encoders = {name: text_encoder(spec, device) for name, spec in (("clip", clip), ("mpnet", mpnet), ("medclip", medclip)) if spec}
    rows = evaluate_run(result, read_truth(truth), encoders, rescore)
    if not rows:
        raise DataError(f"No neuron of run '{result.name}' has a truth in {truth} (check its layer and target names).")
    path = write_evaluation(rows, Path(run_dir) / EVALUATION)
    report = update_evaluation_section(Path(run_dir))
    console = Console()
    table = Table(title=f"Evaluation of {result.name} against {truth.name}", title_justify="left")
    table.add_column("metric")
    for r in rows:
        table.add_column(f"{r['method']}\n{r['dissector']}/{r['target']}\n{r['layer']}", justify="right")
    for c in COLUMNS[4:]:
        values = [r.get(c) for r in rows]
        table.add_row(c, *("—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
    console.print(table)
    missing = [n for n in ("clip", "mpnet", "medclip") if n not in encoders]
    if missing:
        console.print(f"[yellow]Not computed[/] (no encoder given): the {', '.join(missing)} metrics; pass "
                      + " ".join(f"--{n} ..." for n in missing) + ".")
    console.print(f"Wrote {path}" + (f" and the evaluation section of {report}" if report else "") + ".")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` to the ``dissectkit`` app."""
    app.command("evaluate")(evaluate_command)
