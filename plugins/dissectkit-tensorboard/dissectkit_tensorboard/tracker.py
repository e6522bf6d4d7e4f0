"""The TensorBoard writer behind the hooks: what is logged, under which tags and steps."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dissectkit.plugin import LayerLabels, RunResult, layer_threshold

ENV_DIR = "DISSECTKIT_TENSORBOARD_DIR"
ENV_ON = "DISSECTKIT_TENSORBOARD"
TABLE_ROWS = 512


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested recipe data -> ``{"a.b": scalar}``; lists become their YAML-ish text."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    if data is None or isinstance(data, bool | int | float | str):
        return {key: data}
    return {key: str(data)}


def label_table(ll: LayerLabels, rows: int = TABLE_ROWS) -> str:
    """A Markdown table of a layer's labels (TensorBoard renders it in the Text tab)."""
    lines = ["| unit | label | score | next concepts |", "|---:|---|---:|---|"]
    for unit, ranked in enumerate(ll.neurons[:rows]):
        label, score = (ranked[0][0], f"{ranked[0][1]:.4f}") if ranked else ("(no concept)", "")
        lines.append(f"| {unit} | {label} | {score} | {', '.join(c for c, _ in ranked[1:4])} |")
    if len(ll.neurons) > rows:
        lines.append(f"\n{len(ll.neurons) - rows} more neurons in the run's labels.json")
    return "\n".join(lines)


class Tracker:
    """State of the run being logged."""

    def __init__(self) -> None:
        self.writer: Any = None
        self.logdir: Path | None = None
        self.params: dict[str, Any] = {}
        self.steps: dict[str, int] = {}
        self.thresholds: list[float] = []
        self.labelled: list[float] = []

    @staticmethod
    def enabled() -> bool:
        return os.environ.get(ENV_ON, "1").lower() not in ("0", "false", "no", "off")

    def start(self, recipe: dict[str, Any], run_name: str, out_dir: Path) -> None:
        self.close()
        if not self.enabled():
            return
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        root = Path(os.environ.get(ENV_DIR) or out_dir.parent / "tensorboard")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        logdir = root / out_dir.name / stamp
        n = 1
        while logdir.exists():
            logdir, n = root / out_dir.name / f"{stamp}-{n}", n + 1
        self.logdir = logdir
        self.writer = SummaryWriter(str(logdir))
        self.params = flatten(recipe)
        self.writer.add_text("run/recipe", f"run **{run_name}**\n\n```yaml\n{yaml.safe_dump(recipe, sort_keys=False)}```", 0)
        rows = "\n".join(f"| {k} | {v} |" for k, v in self.params.items())
        self.writer.add_text("run/parameters", "| parameter | value |\n|---|---|\n" + rows, 0)
        self.writer.flush()

    def stage(self, stage: str, seconds: float) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar(f"stages/{stage}_seconds", float(seconds), 0)
        self.writer.flush()

    def layer(self, ll: LayerLabels, key: str) -> None:
        if self.writer is None:
            return
        step = self.steps.get(key, 0)
        self.steps[key] = step + 1
        n = len(ll.neurons)
        labelled = sum(1 for ranked in ll.neurons if ranked) / n if n else 0.0
        self.labelled.append(labelled)
        self.writer.add_scalar(f"{key}/labelled_fraction", labelled, step)
        threshold = layer_threshold(ll)  # None when no neuron has a label
        if threshold is not None:
            self.thresholds.append(threshold)
            self.writer.add_scalar(f"{key}/threshold", threshold, step)
        for name, value in sorted(ll.params.items()):
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"{key}/params/{name}", float(value), step)
        self.writer.add_text(f"{key}/labels/{ll.layer}", f"layer **{ll.layer}** (step {step})\n\n" + label_table(ll), step)
        self.writer.flush()

    def finish(self, result: RunResult) -> None:
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        metrics: dict[str, list[float]] = {}
        for key, per_layer in result.measures.items():
            layers = [layer for ls in result.label_sets if ls.key == key for layer in ls.layers]
            for layer, m in per_layer.items():
                step = layers.index(layer) if layer in layers else 0
                for name in ("top1", "top5"):
                    if isinstance(m.get(name), float):
                        self.writer.add_scalar(f"{key}/accuracy/{name}", m[name], step)
                        metrics.setdefault(f"summary/{name}_mean", []).append(m[name])
        summary = {k: sum(v) / len(v) for k, v in metrics.items()}
        if self.thresholds:
            summary["summary/threshold_mean"] = sum(self.thresholds) / len(self.thresholds)
        if self.labelled:
            summary["summary/labelled_fraction"] = sum(self.labelled) / len(self.labelled)
        summary["summary/n_images"] = float(result.stats.get("n_images", len(result.probe_ids)))
        hp = {k: (v if v is not None else "null") for k, v in self.params.items()}
        for s in hparams(hp, summary):
            self.writer.file_writer.add_summary(s)
        for k, v in summary.items():
            self.writer.add_scalar(k, v, 0)
        self.writer.add_text("run/out_dir", str(result.out_dir), 0)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None
        self.steps, self.thresholds, self.labelled = {}, [], []
