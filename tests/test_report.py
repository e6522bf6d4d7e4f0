"""Reporters (csv, json, parquet, html) on a tiny real RunResult with live handles and reloaded."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_report_fixtures import make_run, save_run

import dissectkit as dk
from dissectkit.report.assets import gather_heatmaps, normalise_per_neuron, outline, top_images
from dissectkit.report.html import HtmlOptions, write_html_report
from dissectkit.results import RunResult


def _write(name: str, run, out: Path, **params):
    return dk.create("reporter", name, **params).write(run, out)


def test_reporters_registered():
    names = {s.name for s in dk.list_components("reporter")}
    assert {"csv", "json", "parquet", "html"} <= names


def test_csv_json_parquet_rows(tmp_path):
    run = make_run(tmp_path, methods=("corr", "cos"))
    out = tmp_path / "out"
    csv_path = _write("csv", run, out, top=2)
    json_path = _write("json", run, out, top=2)
    pq_path = _write("parquet", run, out, top=2)
    rows = list(csv.DictReader(csv_path.open()))
    expected = sum(len(ll.neurons) for ls in run.label_sets for ll in ls.layers.values())
    assert len(rows) == expected == 20
    dead = [r for r in rows if r["layer"] == "relu1" and r["unit"] == "3"]
    assert len(dead) == 2 and all(r["label"] == "" and r["score"] == "" and r["n_concepts"] == "0" for r in dead)
    first = rows[0]
    ll = run.label_sets[0].layers["relu1"]
    assert (first["method"], first["layer"], first["unit"]) == ("corr", "relu1", "0")
    assert first["label"] == ll.neurons[0][0][0] == "circle"
    assert first["category"] == "shape" and first["subcategory"] == "round"
    assert first["top_concepts"].split("|") == [c for c, _ in ll.neurons[0][:2]]
    assert np.allclose([float(s) for s in first["top_scores"].split("|")], [s for _, s in ll.neurons[0][:2]], rtol=1e-5)

    data = json.loads(json_path.read_text())
    assert len(data) == 20 and data[3]["label"] is None and data[3]["top_concepts"] == []
    assert data[0]["top_scores"] == [s for _, s in ll.neurons[0][:2]]

    import pandas as pd

    df = pd.read_parquet(pq_path)
    assert len(df) == 20 and list(df.columns)[:6] == ["dissector", "target", "method", "layer", "unit", "label"]
    assert df.loc[0, "score"] == pytest.approx(ll.neurons[0][0][1])
    assert list(df.loc[0, "top_concepts"]) == ["circle", "bright"]
    assert df["label"].isna().sum() == sum(r["label"] == "" for r in rows)


def test_tables_are_byte_identical_across_runs(tmp_path):
    a = _write("csv", make_run(tmp_path / "a"), tmp_path / "a" / "out").read_bytes()
    b = _write("csv", make_run(tmp_path / "b"), tmp_path / "b" / "out").read_bytes()
    assert a == b


def test_gather_heatmaps_batched_matches_direct(tmp_path):
    run = make_run(tmp_path)
    maps = run.outputs["relu2"]  # [N, 6, 20, 20]
    idx, vals = top_images(run.activations("tinynet", "relu2"), 4)
    assert idx.shape == (6, 4) and np.all(np.diff(vals, axis=1) <= 0)
    heat = gather_heatmaps(run.spatial_maps, "tinynet", "relu2", idx, chunk=3)
    for k in range(6):
        for j in range(4):
            np.testing.assert_array_equal(heat[k, j], maps[idx[k, j], k].numpy())
    # each image of the union is asked for once, in chunks of at most 3
    sizes = [n for _, _, n in run.spatial_calls]
    assert sum(sizes) == len(np.unique(idx)) and max(sizes) <= 3
    norm = normalise_per_neuron(heat)
    assert norm.min() >= 0 and norm.max() <= 1
    live = [k for k in range(6) if heat[k].max() > heat[k].min()]
    assert all(norm[k].max() == pytest.approx(1.0) and norm[k].min() == pytest.approx(0.0) for k in live)


def test_large_maps_are_pooled(tmp_path):
    run = make_run(tmp_path)
    idx, _ = top_images(run.activations("tinynet", "relu1"), 2)
    heat = gather_heatmaps(run.spatial_maps, "tinynet", "relu1", idx)
    assert heat.shape == (4, 2, 32, 32)  # 40x40 maps pooled to at most 32x32


def test_outline_is_the_mask_boundary():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    rgba = outline(mask, (20, 20), (0, 255, 255))
    drawn = rgba[..., 3] > 0
    assert drawn[5, 5:15].all() and drawn[5:15, 5].all()  # the border is drawn
    assert not drawn[8:13, 8:13].any() and not drawn[0:3].any()  # inside and far outside are not


def _refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#][^"]*)"', html)


def _check_offline(page: Path) -> list[str]:
    html = page.read_text()
    assert "http://" not in html and "https://" not in html
    refs = [r for r in _refs(html) if not r.startswith("data:")]
    for ref in refs:
        assert (page.parent / ref).is_file(), ref
    return refs


def test_html_report_live(tmp_path):
    run = make_run(tmp_path, methods=("corr", "cos"))
    out = tmp_path / "out"
    page = _write("html", run, out, top_images=4)
    html = page.read_text()
    refs = _check_offline(page)
    # every neuron has a card, in both label sets; the dead neuron says it has no concept
    assert html.count('class="card"') == 20
    assert "No concept was assigned to this neuron." in html
    # thumbnails: written once per probe image, however many neurons show them
    thumbs = sorted((out / "report_files" / "thumbs").iterdir())
    shown = {r for r in refs if "/thumbs/" in r}
    assert len(thumbs) == len(shown) <= 12
    assert html.count("/thumbs/") > len(thumbs)  # shared by several cards
    # heatmaps: one inline PNG per (live neuron, image), both label sets share them
    live = sum(1 for layer in ("relu1", "relu2") for k in range(run.activations("tinynet", layer).shape[1])
               if float(run.activations("tinynet", layer)[:, k].std()) > 0)
    assert html.count('class="heat" src="data:image/png;base64,') == 2 * live * 4
    # spatial maps were computed once per layer (label sets share them), in batches
    assert {layer for _, layer, _ in run.spatial_calls} == {"relu1", "relu2"} and len(run.spatial_calls) == 2
    # mask outlines of the neurons' concepts
    assert 'alt="mask outline: circle"' in html and 'alt="mask outline: square"' in html
    # plots as PNG + SVG next to the report
    plots = {p.name for p in (out / "report_files" / "plots").iterdir()}
    for stem in ("thresholds", "categories-set0", "scores-set0", "categories-set1", "scores-set1"):
        assert {f"{stem}.png", f"{stem}.svg"} <= plots
    # the report still works after the folder is moved
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    _check_offline(moved / "report.html")


def test_html_report_split_pages(tmp_path):
    run = make_run(tmp_path)
    page = write_html_report(run, tmp_path / "out", HtmlOptions(split_above=5, top_images=2))
    html = page.read_text()
    pages = sorted(p.name for p in (tmp_path / "out").glob("report-*.html"))
    assert pages == ["report-s0-relu1.html", "report-s0-relu2.html"]
    assert 'href="report-s0-relu1.html#s0-relu1"' in html and 'class="card"' not in html
    layer = (tmp_path / "out" / pages[1]).read_text()
    assert layer.count('class="card"') == 6 and 'href="report.html"' in layer
    _check_offline(tmp_path / "out" / pages[1])


def test_html_report_reloaded_run_has_cards_without_images(tmp_path):
    run = make_run(tmp_path, methods=("corr", "cos"))
    loaded = RunResult.load(save_run(run))
    assert loaded.probe is None and loaded.activations is None
    page = _write("html", loaded, tmp_path / "out2")
    html = page.read_text()
    assert html.count('class="card"') == 20
    assert "/thumbs/" not in html and "Images are not available for a reloaded run." in html
    assert not (tmp_path / "out2" / "report_files" / "thumbs").exists()
    _check_offline(page)


def test_html_report_max_cards_and_empty_layer(tmp_path):
    from dissectkit.methods import LayerLabels

    run = make_run(tmp_path)
    run.label_sets[0].layers["relu2"] = LayerLabels("relu2", "corr", {}, [[] for _ in range(6)])
    page = write_html_report(run, tmp_path / "out", HtmlOptions(max_cards=1, top_images=1))
    html = page.read_text()
    assert html.count('class="card"') == 2  # first neuron of each layer
    assert html.count("no concept") >= 7


@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 3), (7, 5, 4), (1, 1, 4)])
def test_png_encoder_round_trips_through_pil(shape):
    import io

    from PIL import Image

    from dissectkit.report.assets import png_bytes

    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(png_bytes(arr))))
    assert back.shape == arr.shape and (back == arr).all()


def test_sixteen_bit_images_are_stretched_for_display():
    from dissectkit.report.assets import display_image

    dim = np.full((8, 8), 1000, np.uint16)
    dim[:4] = 3000  # a 12-bit image: would be nearly black if divided by 65535
    arr = np.asarray(display_image(dim))
    assert arr.shape == (8, 8, 3) and arr[:4].min() == 255 and arr[4:].max() == 0


def test_concept_text_is_escaped(tmp_path):
    from dissectkit.types import Concept

    run = make_run(tmp_path, live=False)
    evil = '<script>alert("x")</script>'
    run.concepts.append(Concept(evil, "a&b"))
    run.label_sets[0].layers["relu1"].neurons[0] = [(evil, 0.5)]
    html = write_html_report(run, tmp_path / "out").read_text()
    assert evil not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert 'data-category="a&amp;b"' in html
