"""A warm re-run costs only the labelling (issue 22): on cached activations, another similarity or
concept set with the HTML report reads no image - the card evidence (thumbnails, their files, maps,
mask outlines) is keyed by the activations, not by the method or the concept set.

Reads are counted at the synthetic generator, through a file each read appends to, so the count
includes the DataLoader workers' reads (forked processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dissectkit as dk
from dissectkit.report import cards as report_cards
from dissectkit.synthetic.generator import SynthMammoGenerator

ROOT = Path(__file__).resolve().parents[1]
N = 120


@pytest.fixture
def reads(tmp_path, monkeypatch):
    """A function returning the images read since the last call (in this process and its workers)."""
    log = tmp_path / "reads.log"
    log.touch()
    original = SynthMammoGenerator.item

    def item(self, index):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)
        return original(self, index)

    monkeypatch.setattr(SynthMammoGenerator, "item", item)
    seen = [0]

    def since() -> int:
        total = log.stat().st_size
        new, seen[0] = total - seen[0], total
        return new

    return since


def _run(tmp_path: Path, name: str, *overrides: str):
    recipe = dk.load_recipe(ROOT / "recipes" / "quickstart.yaml", [
        f"probe.params.n={N}", "runtime.batch_size=32", "runtime.chunk_images=50",
        f"output.dir={tmp_path / name}", f"runtime.cache_dir={tmp_path / 'cache'}", *overrides,
    ])
    return dk.run(recipe)


def _report_images(out: Path) -> int:
    return len(list((out / "report_files" / "thumbs").glob("*.jpg")))


@pytest.mark.slow
def test_a_warm_rerun_with_another_similarity_and_the_html_report_reads_no_image(tmp_path, reads):
    cold = _run(tmp_path, "cold", "output.reporters=[csv,html]")
    assert reads() >= N and cold.stats["chunks"]["computed"] > 0  # the counter sees the workers' reads
    warm = _run(tmp_path, "warm", "output.reporters=[csv,html]", "method.params.similarity=cos")
    assert warm.stats["chunks"]["computed"] == 0
    assert reads() == 0
    html = (tmp_path / "warm" / "report.html").read_text()
    assert _report_images(tmp_path / "warm") > 0 and "data:image/png;base64" in html
    assert (tmp_path / "cold" / "labels.json").read_bytes() != (tmp_path / "warm" / "labels.json").read_bytes()


@pytest.mark.slow
def test_the_first_report_of_cached_activations_keeps_what_it_read(tmp_path, reads, monkeypatch):
    # the pass keeps no thumbnail (as on a probe far larger than the cards), and the cold run has no
    # HTML report: the first report reads its shown images, and keeps what it made of them
    monkeypatch.setattr(report_cards, "THUMBNAILS_PER_SLOT", 0)
    _run(tmp_path, "cold", "output.reporters=[csv]")
    assert reads() >= N
    _run(tmp_path, "first", "output.reporters=[html]", "method.params.similarity=cos")
    shown = _report_images(tmp_path / "first")
    assert shown > 0 and reads() == shown  # each shown image read once
    _run(tmp_path, "again", "output.reporters=[html]", "method.params.similarity=wpmi",
         "concepts.params.groups=[findings,synonyms,distractors]")
    assert reads() == 0
    again = tmp_path / "again" / "report_files"
    assert _report_images(tmp_path / "again") > 0
    for thumb in again.joinpath("thumbs").glob("*.jpg"):  # the same files, byte for byte
        first = tmp_path / "first" / "report_files" / "thumbs" / thumb.name
        if first.is_file():
            assert thumb.read_bytes() == first.read_bytes()


def test_the_default_heatmap_colours_are_matplotlibs():
    from dissectkit.report.assets import colormap_lut
    from dissectkit.report.visuals import heat_lut

    assert heat_lut("inferno").tobytes() == colormap_lut("inferno").tobytes()
    assert heat_lut("viridis").tobytes() == colormap_lut("viridis").tobytes()
