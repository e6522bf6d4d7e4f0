"""Card evidence: the html reporter's pass observer keeps the thumbnails and heatmaps of the report's
top images, so the report neither reads those images again nor runs the target; what it lacks is
recomputed."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

import dissectkit as dk
from dissectkit.report import cards as report_cards
from dissectkit.report import visuals as visuals_module
from dissectkit.report.cards import CardEvidence
from dissectkit.report.html import HtmlOptions, card_units
from dissectkit.report.visuals import MAX_MAP_SIDE, Visuals

ROOT = Path(__file__).resolve().parents[1]
TARGET = "synth-effnet-concepts"
N_SHOWN = 5


def _quickstart(tmp_path: Path, *overrides: str):
    recipe = dk.load_recipe(ROOT / "recipes" / "quickstart.yaml", [
        "probe.params.n=120", "runtime.batch_size=32", "runtime.chunk_images=50",
        f"output.dir={tmp_path / 'out'}", f"runtime.cache_dir={tmp_path / 'cache'}", "output.reporters=[html]",
        *overrides,
    ])
    return dk.run(recipe)


class CountingProbe:
    """The run's probe, counting the images read (in this process and in the report's worker
    processes: the count is in shared memory)."""

    def __init__(self, probe) -> None:
        import multiprocessing

        self.probe, self._reads = probe, multiprocessing.Value("i", 0)

    @property
    def reads(self) -> int:
        return self._reads.value

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, index: int):
        with self._reads.get_lock():
            self._reads.value += 1
        return self.probe[index]


def _visuals(run, folder: Path) -> Visuals:
    opts = HtmlOptions(top_images=N_SHOWN, threads=1)
    visuals = Visuals(run, folder, opts)
    visuals.prepare(card_units(run, opts))
    return visuals


def _decoded(uri: str | None) -> np.ndarray | None:
    from PIL import Image

    if uri is None:
        return None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))), dtype=np.int16)


@pytest.fixture(scope="module")
def qs_run(tmp_path_factory):
    return _quickstart(tmp_path_factory.mktemp("cards"))


@pytest.mark.slow
def test_the_pass_keeps_the_shown_thumbnails_and_maps(qs_run):
    run = qs_run
    cards = run.evidence.observations["html"]
    assert isinstance(cards, CardEvidence) and cards.serves(112, MAX_MAP_SIDE)
    kinds = {info.name: info.kind for info in run.layer_infos[TARGET]}
    for layer, rows in run.top_images[TARGET].items():
        kept = cards.layers[(TARGET, layer)]
        shown = [row[:N_SHOWN] for row in rows]
        for k, row in enumerate(shown):
            assert set(row) <= set(cards.thumbnails), (layer, k)
            if row:  # the pass's running top is the run's top-image order (ties by the lower index)
                assert kept.images[k].tolist() == row
        if kinds[layer] == "linear":
            assert kept.maps is None
            continue
        units = np.array([k for k, row in enumerate(shown) for _ in row])
        images = np.array([i for row in shown for i in row])
        found, maps = kept.lookup(units, images)
        assert found.all()
        import torch

        x = torch.stack([run.evidence.model_input(TARGET, run.evidence.read(int(i)).image) for i in images])
        fresh = run.evidence.spatial_maps(TARGET, [layer], x, MAX_MAP_SIDE)[layer].numpy()[np.arange(len(units)), units]
        assert maps.shape == fresh.shape
        assert np.allclose(maps, fresh, rtol=2e-3, atol=2e-3 * np.abs(fresh).max())  # float16 storage


@pytest.mark.slow
def test_the_report_reads_no_image_when_the_pass_kept_them(qs_run, tmp_path):
    run = qs_run
    counting = CountingProbe(run.evidence.probe)
    run.evidence.probe = counting
    try:
        with_cards = _visuals(run, tmp_path / "a" / "report_files")
        assert counting.reads == 0
        cards = run.evidence.observations.pop("html")
        try:
            recomputed = _visuals(run, tmp_path / "b" / "report_files")
        finally:
            run.evidence.observations["html"] = cards
        shown = {i for key in with_cards.layers for row in with_cards.layers[key].indices for i in row}
        assert counting.reads == len(shown) > 0
    finally:
        run.evidence.probe = counting.probe
    for index in shown:  # the same thumbnails, byte for byte
        name = f"img{index:06d}.jpg"
        assert (tmp_path / "a/report_files/thumbs" / name).read_bytes() == (tmp_path / "b/report_files/thumbs" / name).read_bytes()
    diffs = []
    for key, layer_cards in with_cards.layers.items():
        assert (layer_cards.heat is None) == (recomputed.layers[key].heat is None)
        for row_a, row_b in zip(layer_cards.heat or [], recomputed.layers[key].heat or [], strict=True):
            for a, b in zip(row_a, row_b, strict=True):
                a, b = _decoded(a), _decoded(b)
                assert (a is None) == (b is None)
                if a is not None:
                    diffs.append(np.abs(a - b).reshape(-1, 4))
    diff = np.concatenate(diffs)  # float16 maps: at most one step of a value, so of the colour table
    assert len(diffs) > 50 and diff[:, 3].max() <= 1 and diff[:, :3].max() <= 8 and diff.mean() < 0.05


@pytest.mark.slow
def test_layers_past_the_budget_are_recomputed_by_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(report_cards, "CARD_SLOT_BUDGET", 200)  # blocks.1 (80 pairs) and classifier (100) only
    run = _quickstart(tmp_path)
    kept = run.evidence.observations["html"].layers
    assert (TARGET, "blocks.5") not in kept and {(TARGET, "blocks.1"), (TARGET, "classifier")} <= set(kept)
    visuals = _visuals(run, tmp_path / "report_files")
    heat = visuals.layers[(TARGET, "blocks.5")].heat
    for k, row in enumerate(visuals.layers[(TARGET, "blocks.5")].indices):
        assert row and all(uri is not None for uri in heat[k][: len(row)])
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64") > 0


@pytest.mark.slow
def test_a_cached_rerun_reports_from_the_cards_kept_in_the_cache(tmp_path, caplog):
    first = _quickstart(tmp_path)
    saved = sorted((tmp_path / "cache" / "observed").glob("*/observation"))
    assert len(saved) == 1
    with np.load(saved[0], allow_pickle=False) as data:  # plain arrays: no pickles
        assert "index" in data.files
    again = _quickstart(tmp_path, "method={name: clip-dissect, params: {similarity: cos}}")
    assert again.stats["chunks"]["computed"] == 0 and "html" in again.evidence.observations
    a, b = first.evidence.observations["html"], again.evidence.observations["html"]
    assert a.request == b.request and set(a.thumbnails) == set(b.thumbnails) and set(a.layers) == set(b.layers)
    for row, thumb in a.thumbnails.items():
        other = b.thumbnails[row]
        assert np.array_equal(thumb.pixels, other.pixels) and thumb.shown == other.shown
        assert thumb.masks.keys() == other.masks.keys() and all(np.array_equal(m, other.masks[c]) for c, m in thumb.masks.items())
    for key, kept in a.layers.items():
        assert np.array_equal(kept.images, b.layers[key].images)
        assert (kept.maps is None and b.layers[key].maps is None) or np.array_equal(kept.maps, b.layers[key].maps)
    counting = CountingProbe(again.evidence.probe)
    again.evidence.probe = counting
    _visuals(again, tmp_path / "again" / "report_files")
    assert counting.reads == 0 and again.evidence.targets[TARGET]._module is None  # nor is the target built
    # a damaged file is only a lost head start: the report reads the images again
    saved[0].write_bytes(b"not an npz")
    third = _quickstart(tmp_path)  # it fails its checksum: moved aside (named in a warning), computed again
    empty = third.evidence.observations["html"]  # nothing kept: the report fills it (and keeps it again)
    assert empty.thumbnails == {} and empty.layers == {}
    assert "observation failed its check" in caplog.text and "moved aside" in caplog.text
    assert (tmp_path / "out" / "report.html").is_file()


@pytest.mark.slow
def test_a_large_probe_keeps_maps_and_leaves_thumbnails_to_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(report_cards, "THUMBNAILS_PER_SLOT", 0)  # as if the probe were far larger than the cards
    run = _quickstart(tmp_path)
    cards = run.evidence.observations["html"]
    assert cards.thumbnails == {} and cards.layers[(TARGET, "blocks.5")].maps is not None
    counting = CountingProbe(run.evidence.probe)
    run.evidence.probe = counting
    forwards = []
    original = run.evidence.spatial_maps
    monkeypatch.setattr(run.evidence, "spatial_maps", lambda *a, **k: forwards.append(a) or original(*a, **k))
    visuals = _visuals(run, tmp_path / "report_files")
    shown = {i for key in visuals.layers for row in visuals.layers[key].indices for i in row}
    assert counting.reads == len(shown) and forwards == []  # each shown image read once, for its thumbnail only
    assert len(shown) >= visuals_module.PROCESS_READS  # ... in worker processes
    cards5 = visuals.layers[(TARGET, "blocks.5")]
    assert all(uri is not None for k, row in enumerate(cards5.indices) for uri in cards5.heat[k][: len(row)])


def test_no_html_reporter_keeps_nothing(tmp_path):
    run = _quickstart(tmp_path, "output.reporters=[csv]")
    assert run.evidence.observations == {}


@pytest.mark.slow
def test_the_plot_process_draws_the_files_the_parent_would(tmp_path, monkeypatch):
    from test_report_fixtures import make_run

    from dissectkit.report import plot_process, plots

    run = make_run(tmp_path, methods=("corr", "cos"))
    drawn = plot_process.SummaryPlots(run, tmp_path / "child")
    assert drawn.child is not None
    drawn.finish()
    assert drawn.child.returncode == 0 and not drawn.job.exists()
    plots.summary_plots(plot_process.summary_data(run), tmp_path / "parent")
    names = sorted(p.name for p in (tmp_path / "parent").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "child").iterdir()) and len(names) == 10
    for name in names:
        assert (tmp_path / "child" / name).read_bytes() == (tmp_path / "parent" / name).read_bytes(), name
    # a child that fails (or cannot start) leaves the drawing to the parent
    monkeypatch.setattr(plot_process, "CHILD", "import sys; sys.exit(3)")
    failed = plot_process.SummaryPlots(run, tmp_path / "fallback")
    failed.finish()
    assert failed.child.returncode == 3
    assert sorted(p.name for p in (tmp_path / "fallback").iterdir()) == names
    monkeypatch.setattr(plot_process.sys, "executable", str(tmp_path / "no-python"))
    missing = plot_process.SummaryPlots(run, tmp_path / "no-child")
    missing.finish()
    assert missing.child is None and sorted(p.name for p in (tmp_path / "no-child").iterdir()) == names


def test_a_failing_report_stops_its_plot_process(tmp_path, monkeypatch):
    from test_report_fixtures import make_run

    from dissectkit.report import html, plot_process

    started = []

    class Recorded(plot_process.SummaryPlots):
        def __init__(self, *args):
            super().__init__(*args)
            started.append(self)

    def broken(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(html, "SummaryPlots", Recorded)
    monkeypatch.setattr(html, "_write_pages", broken)
    with pytest.raises(OSError, match="disk full"):
        html.write_html_report(make_run(tmp_path), tmp_path / "out")
    (drawing,) = started
    assert drawing.child.poll() is not None and not drawing.job.exists()


@pytest.mark.slow
def test_an_early_plot_process_draws_the_same_files(tmp_path):
    """The html reporter starts the plot process when the pass starts (matplotlib imported while the
    run goes on); given to the report, it draws what a process started then would."""
    from test_report_fixtures import make_run

    from dissectkit.report import plot_process

    run = make_run(tmp_path, methods=("corr", "cos"))
    early = plot_process.early_child()
    assert early is not None
    drawn = plot_process.SummaryPlots(run, tmp_path / "early", early)
    assert drawn.child is early
    drawn.finish()
    assert early.returncode == 0 and not drawn.job.exists()
    late = plot_process.SummaryPlots(run, tmp_path / "late")
    late.finish()
    names = sorted(p.name for p in (tmp_path / "late").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "early").iterdir()) and len(names) == 10
    for name in names:
        assert (tmp_path / "early" / name).read_bytes() == (tmp_path / "late" / name).read_bytes(), name
    # one that is never given a job exits when its stdin closes; one that died is replaced
    idle = plot_process.early_child()
    idle.stdin.close()
    assert idle.wait(timeout=60) == 0
    dead = plot_process.early_child()
    dead.kill()
    dead.wait()
    again = plot_process.SummaryPlots(run, tmp_path / "replaced", dead)
    assert again.child is not dead
    again.finish()
    assert sorted(p.name for p in (tmp_path / "replaced").iterdir()) == names
