"""CLI: ``dissectkit synth train`` (the first-party weights), ``synth export`` (the replica world) and
``dissectkit bench synthetic``."""

from __future__ import annotations

from pathlib import Path

import typer

synth_app = typer.Typer(help="The synthetic mammography world.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks against ground truth.", no_args_is_help=True)


@synth_app.command("train")
def train(
    seed: int = typer.Option(0, help="Seed of the training data, initialisation and order."),
    out: Path = typer.Option(None, help="Output folder (default: the packaged weights folder)."),
    quick: bool = typer.Option(False, help="Tiny sizes (seconds; for tests, not for use)."),
    threads: int = typer.Option(2, help="torch threads (0: torch's default)."),
) -> None:
    """Train synth-clip and the three synth-effnet targets; write safetensors + synth_world.json."""
    from rich.console import Console

    from dissectkit.synthetic.models import WEIGHTS_DIR
    from dissectkit.synthetic.training import TrainConfig, train_all

    console = Console()
    cfg = TrainConfig.quick(seed) if quick else TrainConfig(seed=seed)
    cfg.threads = threads
    out_dir = out or WEIGHTS_DIR
    config = train_all(cfg, out_dir, log=console.print)
    held = config["heldout"]
    console.print(
        f"[bold]Wrote[/] {out_dir} in {config['timings_s']['total_s']:.0f} s: zero-shot AUC (mean over findings) "
        f"{held['zero_shot_auc_mean_findings']}, concepts AUC {held['concepts_auc_mean']}, "
        f"malignancy AUC {held['malignancy_auc_vs_true']}, general AUC {held['general_auc_mean']}."
    )


@synth_app.command("export")
def export(
    layout: str = typer.Option(..., help="vindr-mammo | vindr-png | rsna-mammo | cbis-ddsm | nih-cxr14 | image-folder"),
    n: int = typer.Option(..., help="Generator items 0..n-1 to write."),
    out: Path = typer.Option(..., help="Output folder (must be new or empty unless --force)."),
    seed: int = typer.Option(0, help="Generator seed (the synth-mammo probe's seed)."),
    height: int = typer.Option(320, help="Image height in pixels."),
    width: int = typer.Option(192, help="Image width in pixels."),
    force: bool = typer.Option(False, help="Write into a non-empty folder."),
) -> None:
    """Write the synthetic world in a publisher's layout, with synth_truth.csv and probe.yaml beside it."""
    from rich.console import Console

    from dissectkit.synthetic.export import export_world

    res = export_world(layout, n, out, seed=seed, size=(height, width), force=force)
    Console().print(
        f"[bold]Wrote[/] {res.n_images} images in the {layout} layout to {res.out} in {res.seconds:.1f} s; "
        f"read them with the probe in {res.out / 'probe.yaml'}."
    )


@bench_app.command("synthetic")
def bench_synthetic(
    n: int = typer.Option(1000, help="Probe images generated."),
    seed: int = typer.Option(0, help="Probe seed (and run seed)."),
    out: Path = typer.Option(Path("runs/bench_synthetic"), help="Where the table and run folders go."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    batch_size: int = typer.Option(64, help="Images per batch."),
    clip: str = typer.Option(None, "--clip", help="CLIP text encoder of the published metrics (see `dissectkit evaluate --help`)."),
    mpnet: str = typer.Option(None, "--mpnet", help="MPNet sentence encoder of the published metrics (a local folder)."),
    medclip: str = typer.Option(None, "--medclip", help="MedCLIP text encoder of MAMMI's metrics."),
) -> None:
    """Every method and similarity with every offline dissector on the synthetic targets."""
    from rich.console import Console

    from dissectkit.cli.commands.evaluate import text_encoder
    from dissectkit.synthetic.bench import print_tables, run_benchmark

    console = Console()
    encoders = {k: text_encoder(v) for k, v in (("clip", clip), ("mpnet", mpnet), ("medclip", medclip)) if v}
    result = run_benchmark(n=n, seed=seed, out_dir=out, device=device, batch_size=batch_size, log=console.print,
                           encoders=encoders)
    print_tables(result, console)
    console.print(f"Wrote {out / 'bench_synthetic.json'} and {out / 'bench_synthetic.md'}.")


def register(app: typer.Typer) -> None:
    """Add the ``synth`` and ``bench`` command groups."""
    app.add_typer(synth_app, name="synth")
    app.add_typer(bench_app, name="bench")
