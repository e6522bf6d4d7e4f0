"""dissectkit plugin: log every run to TensorBoard from the event hooks alone (no component).

One run at a time per process; the writer opens when a run starts and closes when it finishes
(or when the next run starts after a failed one). Heavy imports happen inside the tracker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dissectkit.plugin import LayerLabels, RunResult, hookimpl

from .tracker import Tracker

TRACKER = Tracker()


@hookimpl
def dissectkit_run_started(recipe: Any, out_dir: Path) -> None:
    TRACKER.start(recipe.resolved_dict(), recipe.run_name, Path(out_dir))


@hookimpl
def dissectkit_stage_finished(stage: str, seconds: float, out_dir: Path) -> None:
    TRACKER.stage(stage, seconds)


@hookimpl
def dissectkit_layer_labelled(layer_labels: LayerLabels, dissector: str, target: str, method: str) -> None:
    TRACKER.layer(layer_labels, f"{dissector}/{target}/{method}")


@hookimpl
def dissectkit_run_finished(run_result: RunResult) -> None:
    TRACKER.finish(run_result)
