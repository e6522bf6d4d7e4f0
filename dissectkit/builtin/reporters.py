"""Built-in reporters: ``csv``, ``json``, ``parquet`` (one row per neuron) and ``html`` (the report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from dissectkit.base.contract import Reporter
from dissectkit.base.params import Params
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register
from dissectkit.results.evidence import TOP_IMAGES

if TYPE_CHECKING:
    from dissectkit.results.cards import CardRequest


class TableParams(Params):
    top: int = Field(5, ge=1, description="top concepts (with scores) listed per neuron")
    top_images: int = Field(5, ge=0, le=TOP_IMAGES, description="probe ids of the top-activating images listed per neuron")


class HtmlParams(Params):
    top_images: int = Field(5, ge=0, description="top-activating probe images per neuron card")
    top_concepts: int = Field(5, ge=1, description="concepts with scores per neuron card")
    thumb_size: int = Field(112, ge=16, le=512, description="longest side of a thumbnail, pixels")
    heatmap_alpha: float = Field(0.6, ge=0.0, le=1.0, description="opacity of the heatmap at its maximum")
    split_above: int = Field(400, ge=0, description="one page per layer when the run has more neurons than this")
    max_cards: int | None = Field(None, ge=0, description="cards for the first N neurons of each layer only")
    colormap: str = Field("inferno", description="matplotlib colormap of the heatmaps")
    threads: int | None = Field(None, ge=1, le=64, description="threads reading and thumbnailing the shown probe images (default: the CPUs available, at most 4)")


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

    @property
    def card_request(self) -> CardRequest | None:
        """The cards it shows, so the pass keeps their thumbnails and heatmaps (``ReporterDefaults``)."""
        from dissectkit.report.visuals import MAX_MAP_SIDE
        from dissectkit.results.cards import CardRequest

        p = self.params
        return CardRequest(p.top_images, p.thumb_size, MAX_MAP_SIDE, p.max_cards) if p.top_images > 0 else None

    def write(self, run_result: Any, out_dir: Path) -> Path:
        from dissectkit.report.html import HtmlOptions, write_html_report
        return write_html_report(run_result, Path(out_dir), HtmlOptions(**self.params.model_dump()))


def _table(fmt: str):
    def factory(params: TableParams, ctx: Any) -> TableReporter:
        return TableReporter(fmt, params.top, params.top_images)

    return factory


def _html(params: HtmlParams, ctx: Any) -> HtmlReporter:
    return HtmlReporter(params)


@hookimpl
def dissectkit_register_reporters(register: Register) -> None:
    register("csv", _table("csv"), params=TableParams,
                 description="neurons.csv: one row per neuron (label, score, category, top concepts, top image ids)")
    register("json", _table("json"), params=TableParams,
                 description="neurons.json: the same rows as a JSON list")
    register("parquet", _table("parquet"), params=TableParams,
                 description="neurons.parquet: one tidy table (pyarrow) for pandas/polars")
    register("html", _html, params=HtmlParams,
                 description="report.html: offline report with neuron cards, heatmaps and plots")
