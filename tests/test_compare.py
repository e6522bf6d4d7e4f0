"""Comparison of label sets: measures by hand, two runs and one run through the CLI."""

from __future__ import annotations

import csv
import math

import pytest
from test_report_fixtures import CONCEPTS, make_run, save_run

from dissectkit.base.errors import DataError
from dissectkit.labelling.evidence import LayerLabels
from dissectkit.labelling.measures import layer_threshold
from dissectkit.report import pair_measures as M
from dissectkit.report.compare import compare_runs
from dissectkit.results.run_result import RunResult


def _ll(*neurons):
    return LayerLabels("l", "m", {}, [list(n) for n in neurons])


A = _ll([("circle", 0.9), ("square", 0.5)], [("square", 0.4)], [], [("bright", 0.2), ("dark", 0.1)])
B = _ll([("circle", 0.75)], [("circle", 0.6), ("square", 0.3)], [], [("dark", 0.8), ("bright", 0.5)])


def test_agreement_by_hand():
    got = M.agreement(A, B)
    # top-1: circle=circle, square!=circle, None=None, bright!=dark -> 2/4
    assert got["top1_agreement"] == pytest.approx(0.5)
    # jaccard: {c,s}vs{c}=1/2, {s}vs{c,s}=1/2, {} vs {}=1, {b,d}vs{d,b}=1 -> 3/4
    assert got["top5_jaccard"] == pytest.approx(0.75)
    # kappa: p_o=.5; A: c,s,N,b  B: c,c,N,d -> p_e = (1*2 + 1*0 + 1*1 + 0)/16 = 3/16
    assert got["kappa"] == pytest.approx((0.5 - 3 / 16) / (1 - 3 / 16))
    same = _ll([("x", 1.0)], [("x", 0.5)])
    assert M.agreement(same, same) == {"top1_agreement": 1.0, "top5_jaccard": 1.0, "kappa": 1.0}


def test_thresholds_and_counts_by_hand():
    concepts = {c.text: c for c in CONCEPTS}
    assert layer_threshold(A) == pytest.approx((0.9 + 0.4 + 0.2) / 3)
    assert layer_threshold(B) == pytest.approx((0.75 + 0.6 + 0.8) / 3)
    assert layer_threshold(_ll([], [])) is None
    # one side without any labelled neuron: the other's threshold is global, nothing above on the empty side
    g = M.global_threshold_counts(A, _ll([], [], [], []), concepts)
    assert g["threshold_a"] == layer_threshold(A) and g["threshold_b"] is None and g["global"] == pytest.approx(0.5)
    assert g["a"]["total"]["all"] == 1 and g["b"] == {"total": {"all": 0}, "broad": {}, "fine": {}}
    g = M.global_threshold_counts(_ll([], []), _ll([], []), concepts)  # neither side: no threshold, nothing above
    assert g["threshold_a"] is g["threshold_b"] is g["global"] is None
    assert g["a"] == g["b"] == {"total": {"all": 0}, "broad": {}, "fine": {}}
    g = M.global_threshold_counts(A, B, concepts)
    assert g["global"] == pytest.approx(2.15 / 3)  # the larger of 0.5 and 0.7167
    assert g["a"]["total"]["all"] == 1 and g["a"]["broad"] == {"shape": 1} and g["a"]["fine"] == {"round": 1}
    assert g["b"]["total"]["all"] == 2 and g["b"]["broad"] == {"intensity": 1, "shape": 1}
    assert g["b"]["fine"] == {"(none)": 1, "round": 1}  # 'dark' has no subcategory
    only_a, only_b = M.concept_difference(A, B)
    assert only_a == [("bright", 1), ("square", 1)] and only_b == [("dark", 1)]


def test_compare_two_runs(tmp_path):
    a = make_run(tmp_path, name="run-a", methods=("corr",))
    b = make_run(tmp_path, name="run-b", methods=("cos",))
    result = compare_runs([a, b])
    assert len(result) == 1
    pair = result[0]
    assert (pair.a.name, pair.b.name, pair.matched_by) == ("run-a", "run-b", "target+layer")
    assert [lc.name for lc in pair.layers] == ["relu1", "relu2"]
    for lc in pair.layers:
        la, lb = a.label_sets[0].layers[lc.layer_a], b.label_sets[0].layers[lc.layer_b]
        assert lc.top1_agreement == pytest.approx(M.agreement(la, lb)["top1_agreement"])
        assert lc.global_threshold == pytest.approx(max(layer_threshold(la), layer_threshold(lb)))
        assert len(lc.rows) == len(la.neurons)
    relu1 = pair.layers[0]
    # corr: circle, square, square, None; cos: circle, circle, square, None
    assert relu1.top1_agreement == pytest.approx(0.75)


def test_compare_targets_fall_back_to_layer_names(tmp_path):
    a = make_run(tmp_path, name="general", target="net-general")
    b = make_run(tmp_path, name="domain", target="net-domain", seed=1)
    pair = compare_runs([a, b])[0]
    assert pair.matched_by == "layer" and len(pair.layers) == 2


def test_one_run_needs_two_label_sets(tmp_path):
    with pytest.raises(DataError, match="Nothing to compare"):
        compare_runs([make_run(tmp_path)])


def test_cli_compare_two_run_dirs(tmp_path):
    import typer
    from typer.testing import CliRunner

    from dissectkit.cli.commands.compare import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps "compare" a sub-command
        pass

    da = save_run(make_run(tmp_path, name="run-a", methods=("corr",)))
    db = save_run(make_run(tmp_path, name="run-b", methods=("cos",)))
    out = tmp_path / "cmp"
    res = CliRunner().invoke(app, ["compare", str(da), str(db), "--out", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "run-a" in res.output and "relu1" in res.output and "0.750" in res.output
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["layer_a"] for r in rows] == ["relu1", "relu2"]
    assert float(rows[0]["top1_agreement"]) == pytest.approx(0.75)
    assert not math.isnan(float(rows[0]["kappa"]))
    neurons = list(csv.DictReader((out / "comparison_neurons.csv").open()))
    assert len(neurons) == 4 + 6
    assert neurons[3]["label_a"] == "" and neurons[3]["label_b"] == "" and neurons[3]["same"] == "1"
    cats = list(csv.DictReader((out / "comparison_categories.csv").open()))
    assert {r["level"] for r in cats} <= {"broad", "fine"}
    html = (out / "compare.html").read_text()
    assert "top-1 agreement" in html and "compare_files/plots/agreement-0.png" in html
    for ext in ("png", "svg"):
        assert (out / "compare_files" / "plots" / f"agreement-0.{ext}").is_file()


def test_cli_compare_one_run_with_several_label_sets(tmp_path):
    from dissectkit.cli.app import main

    run_dir = save_run(make_run(tmp_path, name="multi", methods=("corr", "cos")))
    out = tmp_path / "cmp"
    assert main(["compare", str(run_dir), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert {(r["a"], r["b"]) for r in rows} == {("shape-clip/tinynet/corr", "shape-clip/tinynet/cos")}
    # one label set only: a clear error, exit code 2
    single = save_run(make_run(tmp_path, name="single"))
    assert main(["compare", str(single), "--out", str(out)]) == 2
    assert main(["compare", str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_reloaded_runs_compare_like_live_ones(tmp_path):
    a, b = make_run(tmp_path, name="a"), make_run(tmp_path, name="b", methods=("cos",))
    live = compare_runs([a, b])[0]
    loaded = compare_runs([RunResult.load(save_run(a)), RunResult.load(save_run(b))])[0]
    assert [lc.kappa for lc in live.layers] == pytest.approx([lc.kappa for lc in loaded.layers])


def test_compare_layer_without_any_concept(tmp_path):
    from dissectkit.report.compare import write_html, write_tables

    a, b = make_run(tmp_path, name="a"), make_run(tmp_path, name="b", methods=("cos",))
    b.label_sets[0].layers["relu2"] = LayerLabels("relu2", "cos", {}, [[] for _ in range(6)])
    result = compare_runs([a, b])
    relu2 = result[0].layers[1]
    assert relu2.threshold_b is None and relu2.global_threshold == pytest.approx(relu2.threshold_a)
    assert relu2.top1_agreement == pytest.approx(3 / 6)  # the three dead neurons agree on "no concept"
    assert result[0].only_b == [] and ("dark", 2) in result[0].only_a
    paths = write_tables(result, tmp_path / "cmp")
    rows = list(csv.DictReader(paths["layers"].open()))
    assert rows[1]["threshold_b"] == "" and rows[1]["above_b"] == "0"
    assert "no concept" in write_html(result, tmp_path / "cmp", [a, b]).read_text()


def test_runs_with_the_same_name_are_told_apart_by_directory(tmp_path):
    a, b = make_run(tmp_path, name="tiny"), make_run(tmp_path, name="tiny", methods=("cos",))
    b.out_dir = tmp_path / "tiny-cos"
    pair = compare_runs([a, b])[0]
    assert (pair.a.name, pair.b.name) == ("tiny", "tiny-cos")


def test_compare_shows_mean_grounding_per_label_set_and_layer(tmp_path):
    from dissectkit.report.compare import GROUNDING_MEANS, quality_ranking, write_html, write_quality_ranking

    a, b = make_run(tmp_path, name="a"), make_run(tmp_path, name="b", methods=("cos",))
    for run, value in ((a, 0.25), (b, 0.75)):
        ls = run.label_sets[0]
        for layer, ll in ls.layers.items():
            n = len(ll.neurons)
            ls.columns.setdefault(layer, {}).update({c: [value] * (n - 1) + [None] for c in GROUNDING_MEANS})
    ranking = quality_ranking([a, b])
    assert {r["label_set"]: r["pointing_above_chance"] for r in ranking if r["layer"] == "relu1"} == pytest.approx(
        {"a": 0.25, "b": 0.75})
    rows = list(csv.DictReader(write_quality_ranking(ranking, tmp_path).open()))
    assert {r["grounding_above_chance"] for r in rows} == {"0.25", "0.75"}
    html = write_html(compare_runs([a, b]), tmp_path / "cmp", [a, b], ranking).read_text()
    assert "Label quality per layer" in html and "pointing above chance" in html and "grounding IoU" in html and ">0.75<" in html
    plain = write_html(compare_runs([make_run(tmp_path, name="c"), make_run(tmp_path, name="d", methods=("cos",))]),
                       tmp_path / "cmp2", [a, b]).read_text()
    assert "Label quality per layer" in plain
