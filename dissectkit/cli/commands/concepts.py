"""CLI: ``dissectkit concepts audit RECIPE``: audit the recipe's concept set for its dissector (and probe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def _image_embeddings(dissector: Any, probe: Any, device: str, batch_size: int, limit: int | None) -> Any:
    """The dissector's embeddings of the first ``limit`` probe images (all by default), ``[N, D]`` on CPU;
    an unreadable image is left out."""
    import torch

    from dissectkit.base.errors import DataError

    n = len(probe) if limit is None else min(limit, len(probe))
    out, batch = [], []
    with torch.inference_mode():
        for i in range(n):
            try:
                batch.append(dissector.preprocess(probe[i].image))
            except DataError:
                continue
            if len(batch) == batch_size or i == n - 1:
                out.append(dissector.encode_images(torch.stack(batch).to(device)).float().cpu())
                batch = []
        if batch:
            out.append(dissector.encode_images(torch.stack(batch).to(device)).float().cpu())
    return torch.cat(out) if out else None


def audit_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML file: its concepts, dissector and probe are audited."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for audit.csv and audit_groups.yaml "
                             "(default: <output.dir>/audit)."),
    overrides: list[str] = typer.Option(None, "--set", "-s", help="Override a recipe key: a.b=value (repeatable)."),
    dissector: str = typer.Option(None, "--dissector", "-d", help="Which of the recipe's dissectors (default: the first)."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Also audit on the probe images (their embeddings)."),
    images: int = typer.Option(None, "--images", help="Audit on the first N probe images only."),
    text_threshold: float = typer.Option(0.95, help="Cosine of centred text embeddings above which two concepts are near-duplicates."),
    probe_threshold: float = typer.Option(0.98, help="Correlation over the probe above which two concepts are indistinguishable."),
    top: int = typer.Option(10, help="A concept among no image's TOP most similar concepts has no close image."),
) -> None:
    """Audit a recipe's concept set: duplicates after normalisation, concepts under several categories,
    near-duplicates by the dissector's text embeddings, pairs it cannot tell apart on the probe, and
    concepts no probe image is close to. Writes audit.csv and audit_groups.yaml, a synonym-groups file
    for the recipe (`concepts: {..., groups: audit_groups.yaml}`)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    import dissectkit as dk
    from dissectkit.base.errors import RecipeError
    from dissectkit.builtin.concepts.groups import CHECKS, audit_concepts, write_audit
    from dissectkit.builtin.concepts.loaders import workbook_listings
    from dissectkit.engine.resolve import resolve

    r = dk.load_recipe(recipe, overrides or [])
    res = resolve(r, kinds=("dissector", "concepts", *(("probe",) if probe else ())))
    if dissector is not None and dissector not in res.dissectors:
        raise RecipeError(f"{recipe}: no dissector {dissector!r}; the recipe has {', '.join(res.dissectors)}.")
    name = dissector or next(iter(res.dissectors))
    d = res.dissectors[name]
    listings = workbook_listings(r.concepts.params["path"]) if r.concepts.name == "mcd-workbook" else None

    def encode(texts: list[str]) -> Any:
        with torch.inference_mode():
            return d.encode_texts(texts).float().cpu()

    V = _image_embeddings(d, res.probe, res.ctx.device, r.runtime.batch_size, images) if probe else None
    audit = audit_concepts(res.concepts, listings, encode, V, text_threshold, probe_threshold, top)
    folder = out or Path(r.output.dir) / "audit"
    csv_path, groups_path = write_audit(audit, folder, f"{recipe} (concepts {r.concepts.name}, dissector {name})")
    console = Console()
    table = Table(title=f"Concept-set audit: {len(res.concepts)} concepts, dissector {name}"
                  + (f", {0 if V is None else V.shape[0]} probe images" if probe else ", no probe"), title_justify="left")
    for col in ("check", "findings", "e.g."):
        table.add_column(col, justify="right" if col == "findings" else "left")
    for check in CHECKS:
        rows = audit.of(check)
        eg = f"{rows[0]['concept']!r}" + (f" ~ {rows[0]['other']!r}" if rows and rows[0]["other"] else "") if rows else ""
        table.add_row(check, str(len(rows)), eg)
    console.print(table)
    console.print(f"{len(audit.groups)} synonym group(s). Wrote {csv_path} and {groups_path}; a recipe reads the "
                  f"groups with `concepts: {{name: {r.concepts.name}, ..., groups: {groups_path}}}`.")


def register(app: typer.Typer) -> None:
    """Add ``concepts audit`` to the ``concepts`` command group."""
    from dissectkit.cli.commands.data import concepts_app

    concepts_app.command("audit")(audit_command)
