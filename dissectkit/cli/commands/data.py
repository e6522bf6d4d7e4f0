"""CLI: ``dissectkit data to-png`` (DICOM -> Mammo-CLIP PNGs) and ``dissectkit concepts from-reports``."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import typer

from dissectkit.base.errors import DataError

data_app = typer.Typer(help="Prepare probe data.", no_args_is_help=True)
concepts_app = typer.Typer(help="Build concept sets.", no_args_is_help=True)


def _convert_one(job: tuple[str, str, bool, int]) -> tuple[str, str | None]:
    """Worker: one DICOM -> one PNG; returns (source, error or None)."""
    src, dst, overwrite, frame = job
    try:
        out = Path(dst)
        if out.exists() and not overwrite:
            return src, None
        from PIL import Image

        from dissectkit.imaging.mammo_png import from_dicom

        png = from_dicom(src, frame=frame)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(png).save(out)
        return src, None
    except DataError as exc:
        return src, str(exc)
    except Exception as exc:  # noqa: BLE001 - reported per file, the others go on
        return src, f"{type(exc).__name__}: {exc}"


def convert_tree(src: Path, dst: Path, workers: int = 4, overwrite: bool = False, progress: bool = True,
                 frame: int = 0) -> list[tuple[str, str]]:
    """Convert every ``*.dcm`` / ``*.dicom`` under ``src`` to ``dst/<same relative path>.png`` by
    Mammo-CLIP's conversion (:func:`dissectkit.imaging.mammo_png.from_dicom`; multi-frame files: frame
    ``frame``). Returns the failures as (file, reason)."""
    from concurrent.futures import ProcessPoolExecutor

    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".dcm", ".dicom") and p.is_file())
    if not files:
        raise DataError(f"No DICOM files (*.dcm, *.dicom) under {src}.")
    jobs = [(str(f), str((dst / f.relative_to(src)).with_suffix(".png")), overwrite, frame) for f in files]
    failures: list[tuple[str, str]] = []
    from rich.progress import Progress

    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    with Progress(disable=not progress) as bar, pool or nullcontext():
        task = bar.add_task("DICOM -> PNG", total=len(jobs))
        for name, err in pool.map(_convert_one, jobs, chunksize=4) if pool else map(_convert_one, jobs):
            if err:
                failures.append((name, err))
            bar.advance(task)
    return failures


@data_app.command("to-png")
def to_png(
    src: Path = typer.Argument(..., help="Folder of DICOM files (searched recursively)."),
    dst: Path = typer.Argument(..., help="Output folder; the relative layout is kept, suffix .png."),
    workers: int = typer.Option(4, help="Parallel worker processes."),
    overwrite: bool = typer.Option(False, help="Rewrite PNGs that already exist."),
    frame: int = typer.Option(0, help="Which frame of multi-frame files (default the first)."),
) -> None:
    """Convert DICOM mammograms to Mammo-CLIP PNGs as Mammo-CLIP's release did: stored pixels (no VOI
    LUT / window), 5-pixel border dropped, MONOCHROME1 inverted, min-max to 8 bits, ExtractBreast crop,
    OpenCV INTER_AREA resize to 912 x 1520. Colour DICOMs are refused."""
    from rich.console import Console

    if not src.is_dir():
        raise DataError(f"Source folder {src} does not exist.")
    failures = convert_tree(src, dst, workers=workers, overwrite=overwrite, frame=frame)
    console = Console()
    for name, err in failures[:20]:
        console.print(f"[red]failed[/red] {name}: {err}")
    if failures:
        raise DataError(f"{len(failures)} file(s) could not be converted (listed above).")
    console.print(f"PNGs written under {dst}")


@concepts_app.command("from-reports")
def from_reports(
    reports: Path = typer.Argument(..., help="Reports: a text file (one report per line) or a CSV."),
    out: Path = typer.Argument(..., help="Output text file, one concept per line."),
    column: str = typer.Option("report", help="CSV column holding the report text."),
    tagger: str = typer.Option("auto", help="auto | spacy | nltk"),
    model: str = typer.Option(None, help="spaCy pipeline name (default: the first English one installed)."),
) -> None:
    """Extract nouns from report sentences (MAMMI): lower-case, strip punctuation, POS-tag, keep nouns,
    deduplicate in first-seen order."""
    from dissectkit.builtin.concepts.reports import get_tagger, nouns_from_reports

    if not reports.is_file():
        raise DataError(f"Reports file {reports} does not exist.")
    if reports.suffix.lower() == ".csv":
        from dissectkit.imaging.files import read_csv

        texts = read_csv(reports, [column]).column(column)
    else:
        texts = reports.read_text(encoding="utf-8").splitlines()
    nouns = nouns_from_reports(texts, get_tagger(tagger, model))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(nouns) + "\n", encoding="utf-8")
    typer.echo(f"{len(nouns)} concepts written to {out}")


def register(app: typer.Typer) -> None:
    """Add the ``data`` and ``concepts`` command groups."""
    app.add_typer(data_app, name="data")
    app.add_typer(concepts_app, name="concepts")
