"""Reports and comparisons of labels produced by every built-in method (clip-dissect, mammi,
netdissect) on the tiny world: a tiny open_clip dissector embeds the shapes probe."""

from __future__ import annotations

import csv

import pytest
from test_report_fixtures import LAYERS, make_run, save_run

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.labelling.evidence import Evidence, SpatialBatch
from dissectkit.results.run_result import LabelSet


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_openclip_dir):
    import torch

    tmp = tmp_path_factory.mktemp("methods")
    run = make_run(tmp, name="all-methods", n=12)
    dis = dk.create("dissector", "open-clip", _ctx=BuildContext(device="cpu"), pretrained=f"local-dir:{tiny_openclip_dir}")
    with torch.no_grad():
        images = torch.stack([dis.preprocess(item.image) for item in run.probe.items])
        embeds = dis.encode_images(images)

    def batches(layer):
        def gen():
            for start in range(0, len(run.probe), 5):
                idx = list(range(start, min(start + 5, len(run.probe))))
                yield SpatialBatch(run.outputs[layer][idx], [run.probe[i].masks for i in idx])
        return gen

    methods = {
        "clip-dissect": dk.create("method", "clip-dissect", similarity="cos"),
        "mammi": dk.create("method", "mammi", template="a photo of {}"),
        "netdissect": dk.create("method", "netdissect"),
    }
    run.label_sets = []
    for name, method in methods.items():
        layers = {}
        for layer in LAYERS:
            ev = Evidence(layer, run.activations("tinynet", layer), embeds, run.concepts, dis.encode_texts,
                          spatial_maps=batches(layer) if method.needs_masks else None)
            layers[layer] = method.label(ev)
        run.label_sets.append(LabelSet("open-clip", "tinynet", name, layers))
    return run


def test_html_and_tables_for_every_method(labelled, tmp_path):
    assert [ls.method for ls in labelled.label_sets] == ["clip-dissect", "mammi", "netdissect"]
    empty = sum(1 for ls in labelled.label_sets for ll in ls.layers.values() for r in ll.neurons if not r)
    assert empty > 0  # dead neurons (mammi) and low-IoU neurons (netdissect) have no concept
    for name in ("csv", "json", "parquet", "html"):
        dk.create("reporter", name).write(labelled, tmp_path)
    rows = list(csv.DictReader((tmp_path / "neurons.csv").open()))
    assert len(rows) == 3 * (4 + 6) and sum(r["label"] == "" for r in rows) == empty
    html = (tmp_path / "report.html").read_text()
    assert html.count('class="card"') == 30
    assert html.count("No concept was assigned to this neuron.") == empty
    for method in ("clip-dissect", "mammi", "netdissect"):
        assert f"open-clip/tinynet/{method}" in html


def test_compare_every_method_pairwise(labelled, tmp_path):
    from dissectkit.cli.app import main

    run_dir = save_run(labelled)
    out = tmp_path / "cmp"
    assert main(["compare", str(run_dir), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert len(rows) == 3 * 2  # 3 pairs x 2 layers
    assert {(r["a"].rsplit("/", 1)[1], r["b"].rsplit("/", 1)[1]) for r in rows} == {
        ("clip-dissect", "mammi"), ("clip-dissect", "netdissect"), ("mammi", "netdissect")}
    for r in rows:
        assert 0.0 <= float(r["top1_agreement"]) <= 1.0 and 0.0 <= float(r["top5_jaccard"]) <= 1.0
    assert (out / "compare.html").stat().st_size > 1000
