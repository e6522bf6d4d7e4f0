"""Built-in reporters: ``csv``, ``json``, ``parquet`` (one row per neuron), ``html`` (the report)
and ``study`` (the Mammo-CLIP Dissect study, docs/study.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from dissectkit.base.contract import Reporter
from dissectkit.base.params import Params
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register
from dissectkit.report.html import HtmlOptions as HtmlParams
from dissectkit.results.evidence import TOP_IMAGES
from dissectkit.study import FOLDER, PAGE, PAGE_TITLE, StudyParams

if TYPE_CHECKING:
    from dissectkit.report.cards import CardCollector
    from dissectkit.results.observe import PassPlan


class TableParams(Params):
    top: int = Field(5, ge=1, description="top concepts (with scores) listed per neuron")
    top_images: int = Field(5, ge=0, le=TOP_IMAGES, description="probe ids of the top-activating images listed per neuron")


@dataclass
class TableReporter(Reporter):
    """Writes the tidy per-neuron table in one format."""

    fmt: str
    top: int = 5
    top_images: int = 5

    FILES = {"csv": "neurons.csv", "json": "neurons.json", "parquet": "neurons.parquet"}

    def write(self, run_result: Any, out_dir: Path) -> Path:
        from dissectkit.report import tables

        rows = tables.neuron_rows(run_result, top=self.top, top_images=self.top_images)
        writer = {"csv": tables.write_csv, "json": tables.write_json, "parquet": tables.write_parquet}[self.fmt]
        return writer(rows, Path(out_dir) / self.FILES[self.fmt])


@dataclass
class HtmlReporter(Reporter):
    """Writes ``report.html`` with layer tables, neuron cards and summary plots."""

    params: HtmlParams
    _plots: Any = field(default=None, init=False, repr=False, compare=False)

    def pass_observer(self, plan: PassPlan) -> CardCollector | None:
        """Keeps the thumbnails and heatmaps of the cards it shows during the pass; starts the plot
        process, which imports matplotlib while the run goes on."""
        from dissectkit.report.cards import CardCollector, CardRequest
        from dissectkit.report.plot_process import early_child
        from dissectkit.report.visuals import MAX_MAP_SIDE

        self._stop_plots()
        self._plots = early_child()

        p = self.params
        return CardCollector.for_plan(CardRequest(p.top_images, p.thumb_size, MAX_MAP_SIDE, p.max_cards), plan)

    def pages(self, run_result: Any) -> dict[str, str]:
        from dissectkit.report.html import REPORT

        return {"HTML report": REPORT}

    def write(self, run_result: Any, out_dir: Path) -> Path:
        from dissectkit.report.html import write_html_report

        child, self._plots = self._plots, None
        return write_html_report(run_result, Path(out_dir), self.params, child)

    def _stop_plots(self) -> None:
        if self._plots is not None and self._plots.poll() is None:
            self._plots.kill()
            self._plots.wait()
        self._plots = None


@dataclass
class StudyReporter(Reporter):
    """Writes ``study/``: the Mammo-CLIP Dissect study's tables, figures and page."""

    params: StudyParams

    def pages(self, run_result: Any) -> dict[str, str]:
        return {PAGE_TITLE: f"{FOLDER}/{PAGE}"}

    def write(self, run_result: Any, out_dir: Path) -> Path:
        from dissectkit.study import write_study

        return write_study(run_result, out_dir, self.params)


def _table(fmt: str):
    def factory(params: TableParams, ctx: Any) -> TableReporter:
        return TableReporter(fmt, params.top, params.top_images)

    return factory


@hookimpl
def dissectkit_register_reporters(register: Register) -> None:
    register("csv", _table("csv"), params=TableParams,
                 description="neurons.csv: one row per neuron (label, score, category, top concepts, top image ids)")
    register("json", _table("json"), params=TableParams,
                 description="neurons.json: the same rows as a JSON list")
    register("parquet", _table("parquet"), params=TableParams,
                 description="neurons.parquet: one tidy table (pyarrow) for pandas/polars")
    register("html", lambda params, ctx: HtmlReporter(params), params=HtmlParams,
                 description="report.html: offline report with neuron cards, heatmaps and plots")
    register("study", lambda params, ctx: StudyReporter(params), params=StudyParams,
                 description="study/: the Mammo-CLIP Dissect study (thresholds, categories, shifts, underrepresented concepts)")
