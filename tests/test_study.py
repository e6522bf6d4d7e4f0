"""The Mammo-CLIP Dissect study: `>=` thresholds, categories, shifts, underrepresented concepts,
the mcd preset, the study recipes, and the files of a real synthetic run checked against a direct
computation from its neurons.csv."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

import dissectkit as dk
from dissectkit.base.types import Concept
from dissectkit.labelling.evidence import LayerLabels
from dissectkit.results.run_result import LabelSet, RunResult
from dissectkit.study import run_study

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _ll(layer: str, neurons: list[list[tuple[str, float]]]) -> LayerLabels:
    return LayerLabels(layer, "clip-dissect", {}, neurons)


@pytest.fixture
def study_run(tmp_path) -> RunResult:
    concepts = [Concept("a", "Mass", "shape"), Concept("b", "Mass", "margin"), Concept("c", "General", "objects"),
                Concept("d", "Calc", "morphology"), Concept("e")]
    g = LabelSet("dis", "g", "clip-dissect", {"x0": _ll("x0", [[("a", 1.0)], [("b", 1.0)]]),
                                              "x1": _ll("x1", [[("b", 3.0)], [("c", 1.0)]])})
    m = LabelSet("dis", "m", "clip-dissect", {"y0": _ll("y0", [[("a", 0.5)], [("c", 1.5)]]),
                                              "y1": _ll("y1", [[("a", 1.0)], [("a", 1.0)]])})
    c = LabelSet("dis", "c1", "clip-dissect", {"y0": _ll("y0", [[("d", 2.0)], [("a", 0.0)], []]),
                                               "y1": _ll("y1", [[("b", 2.0)], [("c", 0.0)]])})
    recipe = {"targets": [{"name": "g", "role": "G"}, {"name": "m", "role": "M"},
                          {"name": "clf", "label": "c1", "role": "C-mass"}],
              "study": {"general_categories": ["General"]}, "output": {"reporters": [{"name": "csv"}]}}
    return RunResult("study", tmp_path, recipe, concepts, ["0", "1", "2"], [g, m, c])


def test_thresholds_use_ge_and_layer_positions(study_run):
    page = run_study(study_run)
    assert page is not None and page.name == "study.html"
    rows = {(r["target"], r["layer"]): r for r in _read(study_run.out_dir / "study" / "thresholds.csv")}
    expect = {  # (threshold, global, >= local, >= global)
        ("g", "x0"): (1.0, 1.0, 2, 2),  # both scores equal the threshold: counted (`>` would count 0)
        ("m", "y0"): (1.0, 1.0, 1, 1),
        ("c1", "y0"): (1.0, 1.0, 1, 1),  # the unlabelled neuron is not in the mean
        ("g", "x1"): (2.0, 2.0, 1, 1),
        ("m", "y1"): (1.0, 2.0, 2, 0),
        ("c1", "y1"): (1.0, 2.0, 1, 1),  # 2.0 >= global 2.0
    }
    for key, (thr, glob, n_local, n_global) in expect.items():
        r = rows[key]
        assert (float(r["threshold"]), float(r["global_threshold"]), int(r["n_meets_local"]), int(r["n_meets_global"])) \
            == (thr, glob, n_local, n_global), key
    assert rows[("c1", "y0")]["role"] == "C-mass" and rows[("c1", "y0")]["n_neurons"] == "3"
    assert rows[("m", "y1")]["layer_index"] == "1"


def test_categories_shift_and_underrepresented(study_run):
    run_study(study_run)
    folder = study_run.out_dir / "study"
    cats = {(r["target"], r["layer"], r["level"], r["category"]): r for r in _read(folder / "categories.csv")}
    assert cats[("g", "x0", "category", "Mass")]["interpretable"] == "2"
    assert float(cats[("g", "x0", "category", "Mass")]["share"]) == 1.0
    assert cats[("c1", "y0", "subcategory", "morphology")]["interpretable"] == "1"
    assert cats[("m", "y1", "category", "Mass")]["interpretable"] == "0"
    assert float(cats[("m", "y1", "category", "Mass")]["share"]) == 0.0
    assert {r["category"] for r in cats.values() if r["level"] == "category"} == {"Mass", "General", "Calc", "(none)"}
    shifts = {(r["shift"], r["level"], r["category"]): float(r["difference"]) for r in _read(folder / "category_shift.csv")}
    assert shifts[("M minus G", "category", "Mass")] == -1.0
    assert shifts[("M minus G", "category", "General")] == 1.0
    assert shifts[("C-mass minus M", "category", "Mass")] == 0.5
    assert shifts[("C-mass minus M", "category", "Calc")] == 0.5
    assert shifts[("C-mass minus M", "category", "General")] == -1.0
    under = _read(folder / "underrepresented.csv")
    assert [r["concept"] for r in under] == ["e"]
    for stem in ("thresholds", "mammography_share", "top_categories"):
        assert (folder / f"{stem}.png").stat().st_size > 1000 and (folder / f"{stem}.svg").exists()
    neurons = _read(folder / "neurons.csv")
    assert len(neurons) == 13
    assert {(r["target"], r["layer"], r["unit"]) for r in neurons if r["meets_global"] == "1"} == {
        ("g", "x0", "0"), ("g", "x0", "1"), ("g", "x1", "0"), ("m", "y0", "1"), ("c1", "y0", "0"), ("c1", "y1", "0")}


def test_no_study_section_writes_nothing(study_run):
    study_run.recipe.pop("study")
    assert run_study(study_run) is None
    assert not (study_run.out_dir / "study").exists()


STUDY_BASE = {"schema_version": 1, "dissector": "synth-clip", "probe": "synth-mammo", "concepts": "synth-mammo-concepts",
              "target": {"name": "synth-effnet-concepts", "layers": ["classifier"], "role": "M"}}


def test_mcd_preset_is_a_recipe_that_others_extend(tmp_path):
    from dissectkit.base.errors import RecipeError
    from dissectkit.host.manager import get_host
    from dissectkit.host.recipe import validate_components

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**STUDY_BASE, "extends": "preset:mcd", "methods": [
        "clip-dissect", {"name": "clip-dissect", "params": {"similarity": "wpmi"}},
        {"name": "clip-dissect", "params": {"similarity": "cos", "top_m": 3, "similarity_params": {"top_k": None}}},
        {"name": "clip-dissect", "params": {"similarity": "wpmi", "similarity_params": {"top_k": 50}}}, "mammi"],
        "output": {"reporters": ["csv", "html", {"name": "study", "params": {"general_categories": ["General"]}}]}}))
    r = dk.load_recipe(path)
    params = [m.params for m in r.methods]
    pub = {"precision": "published"}
    assert params[0] == {"top_m": 10, "similarity": "soft_wpmi", "similarity_params": {"top_k": 100}, **pub}
    assert params[1] == {"top_m": 10, "similarity": "wpmi", "similarity_params": {"top_k": 100}, **pub}  # not 28
    assert params[2] == {"top_m": 3, "similarity": "cos", "similarity_params": {}, **pub}  # null removed the inherited top_k
    assert params[3]["similarity_params"] == {"top_k": 50} and params[4] == {}  # the recipe's values win; mammi: none
    assert [(rep.name, rep.params) for rep in r.output.reporters] == [  # the recipe's list: no json, parquet
        ("csv", {"top": 10}), ("html", {"top_concepts": 10}),
        ("study", {"general_categories": ["General"], "constant_neurons": "include"})]
    validate_components(r, get_host().registry)  # the filled params are valid
    # cos takes no top_k: keeping the inherited one is an error that names it
    cos = {**STUDY_BASE, "extends": "preset:mcd", "method": {"name": "clip-dissect", "params": {"similarity": "cos"}}}
    path.write_text(yaml.safe_dump(cos))
    with pytest.raises(RecipeError, match=r"top_k(.|\n)*come from .*mcd.yaml"):
        validate_components(dk.load_recipe(path), get_host().registry)
    # preset:study alone: 10 concepts per neuron, similarity params untouched; without reporters, the preset's
    path.write_text(yaml.safe_dump({**STUDY_BASE, "extends": "preset:study", "method": "clip-dissect"}))
    r = dk.load_recipe(path)
    assert r.methods[0].params == {"top_m": 10}
    assert [rep.name for rep in r.output.reporters] == ["csv", "json", "parquet", "html", "study"]
    # an override edits the recipe before the preset is merged in: the method named keeps the preset's params
    path.write_text(yaml.safe_dump({**STUDY_BASE, "extends": "preset:mcd", "method": "mammi"}))
    r = dk.load_recipe(path, ["methods=[clip-dissect]", "output.reporters=[csv]"])
    assert r.methods[0].params["top_m"] == 10 and r.output.reporters[0].params == {"top": 10}
    with pytest.raises(RecipeError, match=r"Unknown preset 'mdc'. Did you mean 'mcd'\?"):
        path.write_text(yaml.safe_dump({**STUDY_BASE, "extends": "preset:mdc", "method": "mammi"}))
        dk.load_recipe(path)


def test_the_study_section_is_deprecated_sugar_for_the_preset_and_the_reporter():
    from dissectkit.host.recipe import recipe_from_dict

    data = {**STUDY_BASE, "methods": [{"name": "clip-dissect"}, {"name": "mammi"}], "output": {"reporters": ["csv", "html"]},
            "study": {"preset": "mcd", "top_categories": 4}}
    with pytest.warns(DeprecationWarning, match="extends: preset:mcd"):
        r = recipe_from_dict(data)
    assert [m.params for m in r.methods] == [
        {"top_m": 10, "similarity": "soft_wpmi", "similarity_params": {"top_k": 100}, "precision": "published"}, {}]
    assert [(rep.name, rep.params) for rep in r.output.reporters] == [
        ("csv", {"top": 10}), ("html", {"top_concepts": 10}),
        ("study", {"top_categories": 4, "general_categories": ["Environmental_and_Natural"], "constant_neurons": "include"})]
    assert r.study is None and "study" not in r.resolved_dict()
    with pytest.warns(DeprecationWarning):
        r = recipe_from_dict({**STUDY_BASE, "method": "clip-dissect", "study": {}})  # no preset: preset:study
    assert r.methods[0].params == {"top_m": 10}
    assert [rep.name for rep in r.output.reporters] == ["csv", "json", "study"]  # the default reporters, then the study
    assert recipe_from_dict({**STUDY_BASE, "method": "clip-dissect"}).methods[0].params == {}


def test_the_study_reporter_writes_the_study_and_names_its_page(study_run):
    from dissectkit.study import StudyParams, write_study

    reporter = dk.create("reporter", "study", general_categories=["General"])
    assert reporter.pages(study_run) == {"Study: thresholds, categories, category shift and underrepresented concepts":
                                         "study/study.html"}
    page = reporter.write(study_run, study_run.out_dir)
    assert page == study_run.out_dir / "study" / "study.html"
    first = (study_run.out_dir / "study" / "thresholds.csv").read_bytes()
    legacy = write_study(study_run, study_run.out_dir / "legacy", StudyParams(general_categories=["General"]))
    assert (legacy.parent / "thresholds.csv").read_bytes() == first  # the same as the section's analysis
    assert "This run has no HTML report" in page.read_text()


@pytest.mark.with_plugin("dissectkit_mammoclip")
def test_mcd_study_recipe_validates_and_stops_before_work(tmp_path):
    from dissectkit.base.errors import DissectkitError
    from dissectkit.engine.validate import validate_recipe

    recipe = dk.load_recipe(RECIPES / "mcd_study.yaml", overrides=[f"runtime.cache_dir={tmp_path / 'cache'}",
                                                                   f"output.dir={tmp_path / 'out'}"])
    assert [t.role for t in recipe.targets] == ["G", "M", "C-density", "C-calcification", "C-mass"]
    assert recipe.methods[0].params["top_m"] == 10 and recipe.methods[0].params["similarity_params"] == {"top_k": 100}
    warnings = validate_recipe(recipe)
    assert warnings  # missing data and weights are warnings at validation
    with pytest.raises(DissectkitError) as info:
        dk.run(recipe)
    msg = str(info.value)
    assert "nothing was computed" in msg
    for needed in ("hf download timm/tf_efficientnet_b5.aa_in1k",
                   "hf download shawn24/Mammo-CLIP Pre-trained-checkpoints/b5-model-best-epoch-7.tar",
                   "fine_tune/density/", "fine_tune/calcification/", "fine_tune/mass/",
                   "Downstream-checkpoints/Downstream_evalualtion_b5_fold0.zip",
                   "vindr_detection_v1_folds.csv", "mcd_concepts.xlsx"):
        assert needed in msg, needed
    assert not (tmp_path / "out" / "labels.json").exists()


@pytest.mark.slow
def test_synthetic_study_files_match_a_direct_computation(tmp_path):
    recipe = dk.load_recipe(RECIPES / "study_synthetic.yaml", overrides=[
        "probe.params.n=150", f"output.dir={tmp_path / 'run'}", f"runtime.cache_dir={tmp_path / 'cache'}",
        "runtime.device=cpu",
        "output.reporters=[csv, {name: html, params: {top_images: 0, split_above: 0}}, {name: study, params: {general_categories: [distractor]}}]",
        *(f"targets.{i}.layers=[blocks.3, blocks.5]" for i in range(3)),
    ])
    result = dk.run(recipe)
    out = tmp_path / "run"
    folder = out / "study"
    for name in ("thresholds.csv", "categories.csv", "category_shift.csv", "underrepresented.csv", "study.html",
                 "thresholds.png", "thresholds.svg", "mammography_share.png", "mammography_share.svg",
                 "top_categories.png", "top_categories.svg"):
        assert (folder / name).is_file(), name
    neurons = _read(out / "neurons.csv")
    assert all(r["top_concepts"].count("|") == 9 for r in neurons)  # study mode: 10 concepts per neuron
    assert all(r["sim_corr"] != "" for r in neurons if r["label"])
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in neurons:
        if r["label"]:
            scores[(r["target"], r["layer"])].append(float(r["score"]))
    local = {k: sum(v) / len(v) for k, v in scores.items()}
    glob = {layer: max(v for (t, la), v in local.items() if la == layer) for layer in ("blocks.3", "blocks.5")}
    thresholds = _read(folder / "thresholds.csv")
    assert len(thresholds) == 6
    interp: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in neurons:
        if r["label"] and float(r["score"]) >= glob[r["layer"]] - 1e-6:
            interp[(r["target"], r["layer"])].append(r)
    for row in thresholds:
        key = (row["target"], row["layer"])
        assert float(row["threshold"]) == pytest.approx(local[key], rel=1e-5)
        assert float(row["global_threshold"]) == pytest.approx(glob[row["layer"]], rel=1e-5)
        assert int(row["n_meets_global"]) == len(interp[key])
        assert int(row["n_meets_local"]) == sum(float(r["score"]) >= local[key] - 1e-6 for r in neurons
                                                if (r["target"], r["layer"]) == key and r["label"])
    assert {r["role"] for r in thresholds} == {"G", "M", "C"}
    cats = _read(folder / "categories.csv")
    for row in cats:
        if row["level"] != "category":
            continue
        mine = interp[(row["target"], row["layer"])]
        n = sum((r["category"] or "(none)") == row["category"] for r in mine)
        assert int(row["interpretable"]) == n
        assert float(row["share"]) == pytest.approx(n / len(mine) if mine else 0.0)
    by_role = {r["role"]: r["target"] for r in thresholds}

    def share(target: str, cat: str) -> float:
        hits = [r for (t, _), rs in interp.items() if t == target for r in rs]
        return sum((r["category"] or "(none)") == cat for r in hits) / len(hits)

    shifts = [r for r in _read(folder / "category_shift.csv") if r["level"] == "category"]
    assert {r["shift"] for r in shifts} == {"M minus G", "C minus M"}
    for r in shifts:
        a, b = ("G", "M") if r["shift"] == "M minus G" else ("M", "C")
        assert float(r["difference"]) == pytest.approx(share(by_role[b], r["category"]) - share(by_role[a], r["category"]))
    found = {r["label"] for rs in interp.values() for r in rs}
    assert {r["concept"] for r in _read(folder / "underrepresented.csv")} == {
        c.text for c in result.concepts if c.text not in found}
    page = (folder / "study.html").read_text()
    for i in range(3):
        for layer in ("blocks.3", "blocks.5"):
            link = f"../report-s{i}-{layer}.html#s{i}-{layer}"
            assert link in page
            assert (out / link[3:].split("#")[0]).is_file()
    assert 'href="study/study.html"' in (out / "report.html").read_text()  # the report links to the study


def _quality(sim: list[float | None]) -> dict[str, list]:
    return {"sim_corr": sim, "top_auc": [None if s is None else 0.5 + s / 2 for s in sim],
            "sim_z": [None if s is None else 4 * s for s in sim],
            "label_supported": [None if s is None else s > 0.4 for s in sim]}


def test_compare_ranks_label_sets_by_quality_per_layer(tmp_path):
    import json

    from typer.testing import CliRunner

    from dissectkit.cli.app import app
    from dissectkit.report.compare import quality_ranking

    labels = {"l1": _ll("l1", [[("a", 1.0)], [("b", 1.0)]]), "l2": _ll("l2", [[("a", 1.0)], []])}
    sets = [LabelSet("d1", "t", "clip-dissect", dict(labels), {"l1": _quality([0.2, 0.4]), "l2": _quality([0.9, None])}),
            LabelSet("d2", "t", "clip-dissect", dict(labels), {"l1": _quality([0.5, 0.7]), "l2": _quality([0.1, None])}),
            LabelSet("d1", "t", "mammi", dict(labels), {})]  # a run without quality ranks last
    run = RunResult("r", tmp_path / "r", {}, [Concept("a"), Concept("b")], ["0"], sets)
    ranking = quality_ranking([run])
    l1 = [(r["rank"], r["label_set"], r["sim_corr"]) for r in ranking if r["layer"] == "l1"]
    assert l1 == [(1, "d2/t/clip-dissect", pytest.approx(0.6)), (2, "d1/t/clip-dissect", pytest.approx(0.3)),
                  (3, "d1/t/mammi", None)]
    l2 = {r["label_set"]: r for r in ranking if r["layer"] == "l2"}
    assert l2["d1/t/clip-dissect"]["rank"] == 1 and l2["d1/t/clip-dissect"]["n_scored"] == 1
    assert l2["d1/t/clip-dissect"]["label_supported_share"] == 1.0 and l2["d2/t/clip-dissect"]["label_supported_share"] == 0.0
    run.out_dir.mkdir()
    (run.out_dir / "labels.json").write_text(json.dumps(run.labels_payload()))
    res = CliRunner().invoke(app, ["compare", str(run.out_dir), "--out", str(tmp_path / "cmp")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Label quality per layer" in res.output
    rows = _read(tmp_path / "cmp" / "comparison_quality.csv")
    assert [(r["layer"], r["rank"], r["label_set"]) for r in rows[:3]] == [
        ("l1", "1", "d2/t/clip-dissect"), ("l1", "2", "d1/t/clip-dissect"), ("l1", "3", "d1/t/mammi")]


def test_bench_quality_table_relates_scores_to_truth():
    from dissectkit.synthetic import vocab
    from dissectkit.synthetic.bench import OUTPUT_LAYER, quality_rows, tables

    names = list(vocab.CONCEPT_CLASSES)
    concepts = [Concept(n) for n in names] + [Concept("dog")]
    n = len(names)
    right = [[(names[k], 1.0)] for k in range(n)]
    wrong = [[("dog", 1.0)] for _ in range(n)]
    good = LabelSet("d", "synth-effnet-concepts", "good", {OUTPUT_LAYER: _ll(OUTPUT_LAYER, right)},
                    {OUTPUT_LAYER: _quality([0.5 + 0.01 * k for k in range(n)])})
    bad = LabelSet("d", "synth-effnet-concepts", "bad", {OUTPUT_LAYER: _ll(OUTPUT_LAYER, wrong)},
                   {OUTPUT_LAYER: _quality([0.1 + 0.01 * k for k in range(n)])})
    other = LabelSet("d", "synth-effnet-general", "good", {OUTPUT_LAYER: _ll(OUTPUT_LAYER, wrong)},
                     {OUTPUT_LAYER: _quality([0.9] * n)})  # no truth on other targets: ignored
    run = RunResult("r", Path("."), {}, concepts, [], [good, bad, other])
    rows = quality_rows([("set", run)])
    by = {r["method"]: r for r in rows}
    assert by["good"]["n_right"] == n and by["good"]["n_wrong"] == 0 and by["bad"]["n_wrong"] == n
    pooled = by["all"]
    assert pooled["n_right"] == n and pooled["n_wrong"] == n
    assert pooled["auc_sim_corr"] == 1.0 and pooled["sim_corr_right"] > pooled["sim_corr_wrong"]
    assert by["all, wrong = unrelated"]["n_wrong"] == n  # "dog" is unrelated to every finding
    title, cols, body = tables({"output_layer": [], "agreement_with_netdissect": [], "zero_shot_auc": {},
                                "regimes": [], "quality_vs_truth": rows})[-1]
    assert "auc_sim_corr" in cols and body[-2][cols.index("auc_sim_corr")] == "1.000"
