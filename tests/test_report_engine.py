"""Top images and the report through the real engine: a tiny recipe with an unreadable image."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json

import numpy as np
import pytest
from support import tiny_recipe

import dissectkit as dk
from dissectkit.results.evidence import TOP_IMAGES, RunEvidence
from dissectkit.results.run_result import RunResult


@pytest.fixture
def finished(tmp_path, tiny_openclip_dir, image_root, concepts_file):
    (image_root / "a" / "broken.png").write_bytes(b"not a png at all")
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    rec = dk.load_recipe(recipe, ["output.reporters=[{name: csv, params: {top_images: 3}}, {name: html, params: {top_images: 3, max_cards: 4}}]"])
    return dk.run(rec)


def _brute(acts: np.ndarray, valid: list[int], n: int) -> list[list[int]]:
    out = []
    for k in range(acts.shape[1]):
        col = acts[valid, k]
        if col.max() == col.min():
            out.append([])
            continue
        out.append([valid[j] for j in sorted(range(len(valid)), key=lambda j: (-col[j], valid[j]))[:n]])
    return out


def test_run_result_holds_data_and_top_images_of_valid_images(finished):
    result = finished
    skipped = {int(i) for i in result.stats["skipped"]}
    assert len(skipped) == 1
    for f in dataclasses.fields(result):  # no closures over engine state
        value = getattr(result, f.name)
        assert not (inspect.isfunction(value) or inspect.ismethod(value)), f.name
    assert isinstance(result.evidence, RunEvidence)
    assert not any(inspect.isfunction(getattr(result.evidence, f.name)) for f in dataclasses.fields(RunEvidence))
    saved = json.loads((result.out_dir / "labels.json").read_text())["top_images"]
    assert saved == result.top_images and set(saved["timm"]) == {"layer3", "layer4", "fc"}
    valid = [i for i in range(len(result.probe_ids)) if i not in skipped]
    for layer, rows in saved["timm"].items():
        acts = result.activations("timm", layer).numpy()
        assert rows == _brute(acts, valid, TOP_IMAGES)
        assert not skipped & {i for row in rows for i in row}
    assert RunResult.load(result.out_dir).top_images == saved


def _pages(out) -> str:
    """The report and its per-layer pages (the run has more neurons than ``split_above``)."""
    return "".join(p.read_text() for p in sorted(out.glob("report*.html")))


@pytest.mark.slow
def test_tables_and_report_name_top_images_and_skip_the_unreadable(finished, image_root, tmp_path):
    result = finished
    out = result.out_dir
    bad = next(iter(result.stats["skipped"]))
    bad_id = result.probe_ids[int(bad)]
    rows = list(csv.DictReader((out / "neurons.csv").open()))
    for r in rows:
        assert r["top_images"] == "|".join(result.top_image_ids("timm", r["layer"], int(r["unit"]))[:3])
        assert bad_id not in r["top_images"].split("|")
    assert sum(r["top_images"].count("|") == 2 for r in rows) > len(rows) // 2
    html = _pages(out)
    assert html.count("<figure") > 0
    assert html.count('class="thumb unreadable"') == 0
    assert f'alt="{bad_id}"' not in html
    # a shown image deleted after the run: the report is still written, with a placeholder
    gone = result.top_images["timm"]["layer4"][0][0]
    victim = result.probe.records[gone].path
    assert victim.name != "broken.png"
    victim.unlink()
    dk.create("reporter", "html", top_images=3, max_cards=4).write(result, tmp_path / "kept")
    assert _pages(tmp_path / "kept").count('class="thumb unreadable"') == 0  # the pass kept it: shown as the run read it
    kept = result.evidence.observations.pop("html")  # as after a cached run: the images are read again
    try:
        dk.create("reporter", "html", top_images=3, max_cards=4).write(result, tmp_path / "again")
    finally:
        result.evidence.observations["html"] = kept
    again = _pages(tmp_path / "again")
    assert again.count('class="thumb unreadable"') >= 1 and f'title="{result.probe_ids[gone]}: ' in again
    assert again.count('class="card"') == html.count('class="card"')
