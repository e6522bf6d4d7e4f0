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
from dissectkit.base.errors import DataError
from dissectkit.report.assets import outline
from dissectkit.report.html import HtmlOptions, write_html_report
from dissectkit.results.run_result import RunResult


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


def _brute_top(acts: np.ndarray, n: int, skip: set[int] = frozenset()) -> list[list[int]]:
    """Top-n per column by (value desc, index asc) over the non-skipped rows; [] for constant columns."""
    rows = [i for i in range(acts.shape[0]) if i not in skip]
    out = []
    for k in range(acts.shape[1]):
        col = acts[rows, k]
        if col.max() == col.min():
            out.append([])
            continue
        out.append([rows[j] for j in sorted(range(len(rows)), key=lambda j: (-col[j], rows[j]))[:n]])
    return out


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_streaming_top_images_equal_a_full_sort(tmp_path, chunk):
    import torch

    from dissectkit.engine.cache import Cache
    from dissectkit.results.evidence import streaming_top_images

    rng = np.random.default_rng(chunk)
    n_img, k = 41, 9
    acts = rng.integers(0, 4, (n_img, k)).astype(np.float32)  # many ties
    acts[:, 0] = 2.5  # constant (dead)
    acts[:, 1] = rng.normal(size=n_img)  # no ties
    acts[:, 2] = 0.0
    acts[[3, 30], 2] = 1.0  # only two images above the rest
    skipped = {5: "unreadable", 17: "too small", 40: "bomb"}
    acts[list(skipped), 3] = 99.0  # a skipped image never reaches the top, whatever its (zero) row holds
    entry = Cache(tmp_path).entry("acts", f"k{chunk}", n_img, chunk, {})
    for c in range(entry.n_chunks):
        rows = list(entry.chunk_range(c))
        valid = torch.tensor([i not in skipped for i in rows])
        entry.write_chunk(c, torch.from_numpy(acts[rows]), valid, {i: skipped[i] for i in rows if i in skipped})
    clean = acts.copy()
    clean[list(skipped)] = 0.0
    for n in (1, 4, 10):
        top = streaming_top_images(entry, n, skipped)
        assert top.indices == _brute_top(clean, n, set(skipped))
        for k_, row in enumerate(top.indices):
            assert top.values[k_] == [float(clean[i, k_]) for i in row]
    top = streaming_top_images(entry, 4, skipped)
    assert top.indices[0] == [] and top.indices[2][:2] == [3, 30] and top.indices[2][2:] == [0, 1]
    assert not set(skipped) & {i for row in top.indices for i in row}
    # the skip set also comes from the chunks' valid flags alone
    assert streaming_top_images(entry, 4).indices == top.indices


def test_streaming_top_images_memory_is_bounded_by_the_chunk(tmp_path, monkeypatch):
    """The running top-k merges at most ``n + max(n, 64) + chunk`` keys per neuron, never a whole column."""
    import torch

    from dissectkit.engine.cache import Cache
    from dissectkit.labelling.streaming import RunningTopK
    from dissectkit.results import evidence as run_evidence

    entry = Cache(tmp_path).entry("acts", "big", 400, 16, {})
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(400, 5)).astype(np.float32)
    for c in range(entry.n_chunks):
        rows = list(entry.chunk_range(c))
        entry.write_chunk(c, torch.from_numpy(acts[rows]), torch.ones(len(rows), dtype=torch.bool))
    widths = []
    original = RunningTopK._take

    def spy(self, new, *args):
        widths.append(new.shape[1] + (0 if self._keys is None else self._keys.shape[1]))
        return original(self, new, *args)

    monkeypatch.setattr(RunningTopK, "_take", spy)
    top = run_evidence.streaming_top_images(entry, 3)
    assert widths and max(widths) <= 3 + 64 + 16
    assert top.indices == _brute_top(acts, 3)


def test_top_images_persist_in_labels_json(tmp_path):
    from dissectkit.results.evidence import TOP_IMAGES

    run = make_run(tmp_path, skipped={4: "unreadable file"})
    loaded = RunResult.load(save_run(run))
    assert loaded.top_images == run.top_images
    assert set(loaded.top_images["tinynet"]) == {"relu1", "relu2"}
    for layer, rows in loaded.top_images["tinynet"].items():
        acts = run.pooled[layer].numpy()
        assert rows == _brute_top(acts, TOP_IMAGES, {4})
        assert all(4 not in row for row in rows)
    assert loaded.top_image_ids("tinynet", "relu2", 0) == [run.probe_ids[i] for i in rows[0]]
    # more than the stored ten: a fresh streaming pass over the cache
    longer = run.evidence.top_images("tinynet", "relu2", 11)
    assert longer.indices == _brute_top(run.pooled["relu2"].numpy(), 11, {4})
    assert run.evidence.top_images("tinynet", "relu2", 3).indices == [r[:3] for r in rows]
    assert run.label_sets[0].layers["relu1"].neurons[3] == [] and loaded.top_images["tinynet"]["relu1"][3] == []


def test_heatmaps_are_normalised_per_neuron_over_the_shown_maps():
    from dissectkit.report.assets import normalise_per_neuron

    heat = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    heat[0, 2] = np.nan  # not shown (image unreadable at report time)
    heat[1] = 5.0  # flat
    norm = normalise_per_neuron(heat)
    np.testing.assert_allclose(norm[0, :2].ravel(), np.arange(8) / 7.0, rtol=1e-6)
    assert (norm[0, 2] == 0).all() and (norm[1] == 0).all()


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
    live = sum(1 for layer in ("relu1", "relu2") for row in run.top_images["tinynet"][layer] if row)
    assert live == sum(1 for layer in ("relu1", "relu2") for k in range(run.activations("tinynet", layer).shape[1])
                       if float(run.activations("tinynet", layer)[:, k].std()) > 0)
    assert html.count('class="heat" src="data:image/png;base64,') == 2 * live * 4
    # each shown image runs through the net once (label sets share it), batched with the images
    # that the same layers show
    from collections import Counter

    shown = {layer: {i for row in run.top_images["tinynet"][layer] for i in row[:4]} for layer in ("relu1", "relu2")}
    needs = Counter(tuple(layer for layer in shown if i in shown[layer]) for i in set().union(*shown.values()))
    assert sorted(run.forward_batches) == sorted(needs.values()) and sum(run.forward_batches) == len(thumbs)
    # each heatmap is the neuron's real activation map on that image, pooled to <= 32 px
    first = next(k for k in range(6) if run.top_images["tinynet"]["relu2"][k])
    assert html.count(f'title="{run.probe_ids[run.top_images["tinynet"]["relu2"][first][0]]} (activation') >= 1
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


def test_skipped_images_never_reach_the_report(tmp_path):
    full = make_run(tmp_path / "full")
    best = {row[0] for rows in full.top_images["tinynet"].values() for row in rows if row}
    skipped = {i: "cannot read: no pixel data" for i in sorted(best)[:2]}
    run = make_run(tmp_path / "skip", skipped=skipped)
    html = _write("html", run, tmp_path / "out", top_images=10).read_text()
    shown = {int(name[3:9]) for name in re.findall(r"thumbs/(img\d{6})\.jpg", html)}
    assert shown and not shown & set(skipped)
    for i in skipped:
        assert f">{run.probe_ids[i]} ·" not in html and run.probe_ids[i] not in html
    assert 'class="thumb unreadable"' not in html  # the skipped images are not even placeholders


class _Broken:
    """A probe whose chosen images became unreadable after the run (file deleted, truncated...)."""

    def __init__(self, probe, bad: dict[int, Exception]) -> None:
        self.probe, self.bad = probe, bad

    def __len__(self) -> int:
        return len(self.probe)

    def __getitem__(self, i):
        if i in self.bad:
            raise self.bad[i]
        return self.probe[i]


def test_image_unreadable_at_report_time_is_a_placeholder(tmp_path):
    run = make_run(tmp_path)
    rows = run.top_images["tinynet"]["relu2"]
    first = next(row for row in rows if row)
    bad = {first[0]: DataError("Cannot read image a.png: truncated"), first[1]: OSError("No such file: b.png")}
    run.evidence.probe = _Broken(run.evidence.probe, bad)
    page = _write("html", run, tmp_path / "out", top_images=4)
    html = page.read_text()
    _check_offline(page)
    expected = sum(i in bad for layer_rows in run.top_images["tinynet"].values() for row in layer_rows for i in row[:4])
    assert expected >= 2 and html.count('class="thumb unreadable"') == expected
    for i in bad:
        assert f'title="{run.probe_ids[i]}: ' in html and not (tmp_path / "out" / "report_files" / "thumbs" / f"img{i:06d}.jpg").exists()
    assert "truncated" in html and "No such file: b.png" in html
    thumbs = list((tmp_path / "out" / "report_files" / "thumbs").iterdir())
    assert len(thumbs) >= 3  # the other images are still shown


def test_tables_list_top_image_ids(tmp_path):
    run = make_run(tmp_path, skipped={0: "unreadable"})
    out = tmp_path / "out"
    rows = list(csv.DictReader(_write("csv", run, out, top_images=3).open()))
    data = json.loads(_write("json", run, out, top_images=3).read_text())
    import pandas as pd

    df = pd.read_parquet(_write("parquet", run, out, top_images=3))
    for i, r in enumerate(rows):
        ids = run.top_image_ids(r["target"], r["layer"], int(r["unit"]))[:3]
        assert r["top_images"] == "|".join(ids) and data[i]["top_images"] == ids
        assert list(df.loc[i, "top_images"]) == ids
        assert run.probe_ids[0] not in ids
    assert rows[0]["top_images"].count("|") == 2
    assert [r["top_images"] for r in rows if r["layer"] == "relu1" and r["unit"] == "3"] == [""]  # dead neuron


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
    assert loaded.probe is None and loaded.evidence is None
    with pytest.raises(DataError, match="reloaded"):
        loaded.activations("tinynet", "relu1")
    page = _write("html", loaded, tmp_path / "out2")
    html = page.read_text()
    assert html.count('class="card"') == 20
    assert "/thumbs/" not in html and "Images are not available for a reloaded run." in html
    # the cards still name each neuron's top images (probe ids from labels.json)
    ids = run.top_image_ids("tinynet", "relu2", 0)[:5]
    assert ids and "top images: " + ", ".join(f"<code>{i}</code>" for i in ids) in html
    assert not (tmp_path / "out2" / "report_files" / "thumbs").exists()
    _check_offline(page)


def test_html_report_max_cards_and_empty_layer(tmp_path):
    from dissectkit.labelling.evidence import LayerLabels

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
    grey = np.asarray(display_image(dim, keep_grey=True))
    assert grey.shape == (8, 8) and (grey == arr[..., 0]).all()


def test_concept_text_is_escaped(tmp_path):
    from dissectkit.base.types import Concept

    run = make_run(tmp_path, live=False)
    evil = '<script>alert("x")</script>'
    run.concepts.append(Concept(evil, "a&b"))
    run.label_sets[0].layers["relu1"].neurons[0] = [(evil, 0.5)]
    html = write_html_report(run, tmp_path / "out").read_text()
    assert evil not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert 'data-category="a&amp;b"' in html


def test_spatial_maps_stop_after_the_deepest_wanted_layer(tmp_path):
    run = make_run(tmp_path)
    net = run.evidence.targets["tinynet"].module
    ran: list[str] = []
    net.conv2.register_forward_pre_hook(lambda _m, _inp: ran.append("conv2"))
    x = torch_stack([run.evidence.model_input("tinynet", run.probe[i].image) for i in (0, 1, 2)])
    maps = run.evidence.spatial_maps("tinynet", ["relu1"], x)
    assert set(maps) == {"relu1"} and maps["relu1"].shape == (3, 4, 40, 40) and ran == []
    maps = run.evidence.spatial_maps("tinynet", ["relu1", "relu2"], x, max_side=8)
    assert ran == ["conv2"] and maps["relu1"].shape == (3, 4, 8, 8) and maps["relu2"].shape == (3, 6, 8, 8)
    import torch.nn.functional as F

    expected = F.adaptive_avg_pool2d(run.outputs["relu1"][:3], (8, 8))
    assert np.allclose(maps["relu1"].numpy(), expected.numpy(), atol=1e-5)


def torch_stack(xs):
    import torch

    return torch.stack(xs)


def test_no_concept_reason_is_shown_on_the_card(tmp_path):
    from dissectkit.report.html import no_concept_reason

    run = make_run(tmp_path, live=False)
    ll = run.label_sets[0].layers["relu1"]
    assert ll.neurons[3] == [] and no_concept_reason(ll, 3) == "no concept" and no_concept_reason(ll, 0) is None
    ll.reasons = {3: "dead"}  # the per-neuron reason a method gives (LayerLabels.reasons)
    want = "dead: constant activation over every valid probe image (a dead neuron): nothing to label"
    assert no_concept_reason(ll, 3) == want
    html = write_html_report(run, tmp_path / "out").read_text()
    assert f"No concept was assigned to this neuron. <span class=\"reason\">({want})</span>" in html
    row = next(r for r in run.rows() if r["layer"] == "relu1" and r["unit"] == 3)
    assert row["label"] is None and row["no_concept"] == "dead"  # the tables say why


def test_image_batches_group_the_images_the_same_layers_show():
    from dissectkit.report import visuals

    needs = {i: ("a",) if i < 40 else (("a", "b") if i < 45 else ()) for i in range(50)}
    batches = visuals._batches(list(range(50)), needs)
    assert [len(b) for b in batches] == [5, 32, 8, 5]
    assert all(len({needs[i] for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(50))
