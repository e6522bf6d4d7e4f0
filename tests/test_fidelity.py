"""Fidelity to the published code (issue 20), kept true without it: the concept workbook's quirks
(six sheets, a leading-space sheet name, a trailing-space duplicate: 774 cells, 764 strings, 763
concepts), the study's settings checked against the concept set, the published threshold rules,
``precision: published`` against float32 reference loops written from shared/docs/methods.md, label
margins, and Mammo-CLIP's PNG conversion's two edge cases. (The G conversion is tested with the
mammoclip plugin: plugins/dissectkit-mammoclip/tests/test_imagenet.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import dissectkit as dk
from dissectkit.base.errors import RecipeError
from dissectkit.base.types import Concept
from dissectkit.labelling.evidence import LayerLabels
from dissectkit.results.run_result import LabelSet, RunResult

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# --------------------------------------------------------------------------- the published workbook
SHEETS = {  # the six sheets in order, with their sub-category headers (shared/docs/datasets.md)
    "Breast_anatomy_or_structure": ["Breast Structures or Anatomy", "Breast Implants"],
    "Breast_locations": ["Breast Finding Locations", "Breast Views and Laterality"],
    " Findings and characterizations": ["Breast Density", "Mammographic tissue", "Mass", "Calcifications morphology",
                                        "Calcifications distribution", "Architectural distortion", "Asymmetry",
                                        "Lymph node"],
    "Interpretations": ["Lymph node/ other findings", "Implants", "Benign Calcifications", "Suspicious calcifications",
                        "Suspicious findings", "Negative or benign findings", "Post biopsy/ surgery"],
    "Action or follow up": ["Action", "After results"],
    "Environmental_and_Natural": ["Materials", "Natural", "Objects", "Colours"],
}
FINDINGS = " Findings and characterizations"
ENV = "Environmental_and_Natural"
# concepts listed more than once (after stripping spaces): 10, seven of them under two categories
REPEATS = [
    ("questionable mass", (FINDINGS, "Mass")), ("questionable mass ", ("Interpretations", "Suspicious findings")),
    ("membrane", ("Interpretations", "Lymph node/ other findings")), ("membrane", (ENV, "Materials")),
    ("foreign body including implants", ("Breast_anatomy_or_structure", "Breast Implants")),
    ("foreign body including implants", ("Interpretations", "Implants")),
    ("skin", ("Breast_anatomy_or_structure", "Breast Structures or Anatomy")), ("skin", (ENV, "Natural")),
    ("shell", ("Interpretations", "Benign Calcifications")), ("shell", (ENV, "Natural")),
    ("left", ("Breast_locations", "Breast Views and Laterality")), ("left", ("Action or follow up", "After results")),
    ("stable", ("Interpretations", "Negative or benign findings")), ("stable", ("Action or follow up", "After results")),
    ("calcification", (FINDINGS, "Calcifications morphology")), ("calcification", (FINDINGS, "Calcifications distribution")),
    ("biopsy", ("Action or follow up", "Action")), ("biopsy", ("Action or follow up", "After results")),
    ("mass", (FINDINGS, "Mass")), ("mass", (FINDINGS, "Asymmetry")), ("mass", (FINDINGS, "Lymph node")),
    ("spiculated ", (FINDINGS, "Mass")),  # a trailing space without a twin: a concept of its own, spaces kept
]


def published_workbook(path: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """A workbook with the published one's quirks and counts; returns its cells (sheet, header, text)
    in the published lookup's order and the published sorted concept list built from them."""
    from openpyxl import Workbook

    columns: dict[tuple[str, str], list[str]] = {(s, h): [] for s, hs in SHEETS.items() for h in hs}
    for text, where in REPEATS:
        columns[where].append(text)
    other = [k for k in columns if k[0] != ENV]
    env = [k for k in columns if k[0] == ENV]
    for i in range(391):  # the non-mammography sheet: 394 cells
        columns[env[i % len(env)]].append(f"everyday thing {i:03d}")
    for i in range(361):
        columns[other[i % len(other)]].append(f"mammography term {i:03d}" + (" " if i == 7 else ""))
    wb = Workbook()
    wb.remove(wb.active)
    for sheet, headers in SHEETS.items():
        ws = wb.create_sheet(sheet)
        for j, header in enumerate(headers, start=1):
            ws.cell(1, j, header)
            for i, text in enumerate(columns[(sheet, header)], start=2):
                ws.cell(i, j, text)
    wb.save(path)
    cells = [(s, h, t) for s, hs in SHEETS.items() for h in hs for t in columns[(s, h)]]
    published = sorted({t for _, _, t in cells} - {"questionable mass "})
    return cells, published


def published_lookup(cells: list[tuple[str, str, str]], concepts: list[str]) -> dict[str, tuple[str, str]]:
    """The published category lookup: sheet by sheet, column by column, every concept found in a
    column takes that column's header and sheet (a later listing overwrites an earlier one)."""
    out: dict[str, tuple[str, str]] = {}
    wanted = set(concepts)
    for sheet, header, text in cells:
        if text in wanted:
            out[text] = (sheet, header)
    return out


@pytest.fixture(scope="module")
def workbook(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcd")
    path = folder / "mcd_concepts.xlsx"
    cells, published = published_workbook(path)
    (folder / "Specific_concepts_sorted.txt").write_text("\n".join(published) + "\n", encoding="utf-8")
    return {"path": path, "cells": cells, "published": published, "list": folder / "Specific_concepts_sorted.txt"}


def test_the_fixture_has_the_published_counts(workbook):
    cells = workbook["cells"]
    assert len(cells) == 774 and len({t for *_, t in cells}) == 764 and len(workbook["published"]) == 763
    assert sum(s == ENV for s, *_ in cells) == 394 and list(SHEETS)[2].startswith(" ")
    stripped: dict[str, set[str]] = {}
    for s, _, t in cells:
        stripped.setdefault(t.strip(), set()).add(s)
    several = [t for t in stripped if sum(c[2].strip() == t for c in cells) > 1]
    assert len(several) == 10 and sum(len(stripped[t]) == 2 for t in several) == 7


def test_mcd_concepts_are_exactly_the_published_list(workbook):
    """The 763 / 764 construction: the mcd preset's concept set is the published sorted list, each concept
    with the category the published lookup gives it (``questionable mass``: its own listing, Mass)."""
    with pytest.warns(UserWarning, match="merged into it.*'questionable mass '"):
        got = dk.create("concepts", "mcd-workbook", path=str(workbook["path"]), whitespace="published",
                        order="sorted").concepts
    lookup = published_lookup(workbook["cells"], workbook["published"])
    assert [c.text for c in got] == workbook["published"]
    assert all((c.category, c.subcategory) == lookup[c.text] for c in got)
    index = {c.text: c for c in got}
    assert (index["questionable mass"].category, index["questionable mass"].subcategory) == (FINDINGS, "Mass")
    assert index["membrane"].category == ENV and index["mass"].subcategory == "Lymph node"
    assert "spiculated " in index and "mammography term 007 " in index  # spaces kept where the list keeps them
    # spaces kept as they are: 764 concepts (the extra near-duplicate changes soft-WPMI's softmax)
    with pytest.warns(UserWarning):
        kept = dk.create("concepts", "mcd-workbook", path=str(workbook["path"])).concepts
    assert len(kept) == 764 and {c.text for c in kept} - set(workbook["published"]) == {"questionable mass "}
    # the user's copy of the published list: the same set, its order
    with pytest.warns(UserWarning, match="not in the list"):
        listed = dk.create("concepts", "mcd-workbook", path=str(workbook["path"]),
                           concept_list=str(workbook["list"])).concepts
    assert listed == got


def test_the_mcd_preset_resolves_the_published_inputs(workbook, tmp_path):
    from dissectkit.engine.resolve import resolve

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "schema_version": 1, "extends": "preset:mcd", "dissector": "synth-clip", "probe": "synth-mammo",
        "target": {"name": "synth-effnet-concepts", "layers": ["classifier"], "role": "M"},
        "concepts": {"name": "mcd-workbook", "params": {"path": str(workbook["path"])}},
        "method": "clip-dissect", "output": {"dir": str(tmp_path / "out")}, "runtime": {"device": "cpu"},
    }))
    recipe = dk.load_recipe(path)
    assert recipe.concepts.params == {"path": str(workbook["path"]), "whitespace": "published", "order": "sorted"}
    assert recipe.methods[0].params["precision"] == "published"
    study = next(r for r in recipe.output.reporters if r.name == "study")
    assert study.params == {"general_categories": [ENV], "constant_neurons": "include"}
    with pytest.warns(UserWarning):
        res = resolve(recipe)
    assert [c.text for c in res.concepts] == workbook["published"]


@pytest.mark.with_plugin("dissectkit_mammoclip")
def test_validate_checks_the_study_categories_against_the_workbook(workbook, tmp_path):
    """`dissectkit validate recipes/mcd_study.yaml`: passes with the published six sheets (missing
    weights are warnings), fails naming the available categories with `general_categories: [General]`."""
    from dissectkit.engine.validate import validate_recipe

    overrides = [f"concepts.params.path={workbook['path']}", f"runtime.cache_dir={tmp_path / 'cache'}"]
    recipe = dk.load_recipe(RECIPES / "mcd_study.yaml", overrides=overrides)
    with pytest.warns(UserWarning):
        warnings = validate_recipe(recipe)
    assert warnings and not any("mcd_concepts" in w for w in warnings)
    bad = tmp_path / "general.yaml"
    bad.write_text(yaml.safe_dump({"extends": str(RECIPES / "mcd_study.yaml"), "output": {
        "reporters": ["csv", {"name": "study", "params": {"general_categories": ["General"]}}]}}))
    with pytest.warns(UserWarning), pytest.raises(RecipeError) as info:
        validate_recipe(dk.load_recipe(bad, overrides=overrides))
    msg = str(info.value)
    assert "reporter 'study' params.general_categories names category 'General'" in msg
    for sheet in SHEETS:
        assert repr(sheet) in msg, sheet


def test_a_study_category_absent_from_the_concepts_stops_the_run_before_any_work(tmp_path):
    recipe = dk.load_recipe(RECIPES / "study_synthetic.yaml", overrides=[
        f"output.dir={tmp_path / 'out'}", f"runtime.cache_dir={tmp_path / 'cache'}", "runtime.device=cpu",
        "output.reporters=[csv, {name: study, params: {general_categories: [Distractor]}}]"])
    with pytest.raises(RecipeError, match=r"(?s)nothing was computed.*'Distractor'.*Did you mean 'distractor'"):
        dk.run(recipe)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))
    assert not (tmp_path / "out" / "labels.json").exists()
    # the default ('distractor') is checked too, and an empty list opts out
    from dissectkit.engine.validate import validate_recipe

    (tmp_path / "words.txt").write_text("mass\ncalcification\n")

    def with_study(params: str) -> dk.Recipe:
        path = tmp_path / "study.yaml"
        path.write_text(
            "dissector: synth-clip\ntarget: {name: synth-effnet-concepts, layers: [classifier]}\n"
            f"probe: synth-mammo\nconcepts: {{name: text, params: {{path: '{tmp_path / 'words.txt'}'}}}}\n"
            "method: clip-dissect\n"
            f"output: {{dir: '{tmp_path / 'o'}', reporters: [{{name: study, params: {params}}}]}}\n"
            f"runtime: {{offline: true, cache_dir: '{tmp_path / 'cache'}'}}\n")
        return dk.load_recipe(path)

    with pytest.raises(RecipeError, match=r"general_categories \(the default\) names category 'distractor'.*"
                                          r"none: the concept set has no categories.*\[\] for none"):
        validate_recipe(with_study("{}"))
    validate_recipe(with_study("{general_categories: []}"))


# --------------------------------------------------------------------------- the study as published
def _ll(layer: str, neurons, dead=()) -> LayerLabels:
    return LayerLabels(layer, "clip-dissect", {}, neurons, {k: "dead" for k in dead})


def test_constant_neurons_in_the_layer_mean_as_published(tmp_path):
    """The published layer mean counts a constant neuron's top-1 score (its labels exist with
    ``precision: published``); dissectkit's default leaves it out of the mean and of the counts."""
    import csv

    from dissectkit.study import StudyParams, write_study

    concepts = [Concept("a", "Mass", "shape"), Concept("b", "General", "objects")]
    ls = LabelSet("d", "m", "clip-dissect", {"x": _ll("x", [[("a", 3.0)], [("b", 1.0)], [("a", 5.0)]], dead=[2])})
    run = RunResult("s", tmp_path, {"targets": [{"name": "m", "role": "M"}]}, concepts, ["0"], [ls])
    for mode, threshold, meets in (("include", 3.0, 2), ("exclude", 2.0, 1)):
        write_study(run, tmp_path / mode, StudyParams(general_categories=["General"], constant_neurons=mode))
        with (tmp_path / mode / "study" / "thresholds.csv").open() as fh:
            (row,) = list(csv.DictReader(fh))
        assert (float(row["threshold"]), int(row["n_meets_global"])) == (threshold, meets), mode


def test_top_categories_by_sheet_with_the_published_tie_order(tmp_path):
    """Fig. 4C counts sheets; ties keep the order in which the categories first appear among the
    neurons by descending top-1 score (the published table is sorted so before counting)."""
    import csv

    from dissectkit.study import StudyParams, write_study

    concepts = [Concept("a", "Zeta", "z1"), Concept("b", "Alpha", "a1"), Concept("c", "Mid", "m1")]
    ls = LabelSet("d", "m", "clip-dissect", {"x": _ll("x", [[("b", 1.0)], [("a", 2.0)], [("c", 1.5)], [("c", 1.0)]])})
    run = RunResult("s", tmp_path, {"targets": [{"name": "m", "role": "M"}]}, concepts, ["0"], [ls])
    write_study(run, tmp_path, StudyParams(general_categories=["Zeta"]))
    with (tmp_path / "study" / "categories.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["level"] == "category"]
    # all meet the layer threshold (1.375)? scores >= 1.375: a (2.0), c (1.5): Zeta 1, Mid 1 - a tie
    rank = {r["category"]: r["rank"] for r in rows}
    assert rank == {"Zeta": "1", "Mid": "2", "Alpha": ""}  # Zeta first: its neuron scores higher (not alphabetical)
    for name in ("top_categories", "top_subcategories"):
        assert (tmp_path / "study" / f"{name}.png").is_file() and (tmp_path / "study" / f"{name}.svg").is_file()


# --------------------------------------------------------------------------- MAMMI's threshold
def published_tau(lo: np.float32, hi: np.float32, p: float) -> np.float32:
    """MAMMI under numpy 1.26, from the issue's description: ``hi - lo`` of two float32 scalars is
    float32; ``hi - interval * (1 - p/100)`` is float64 (a float32 scalar times a Python float); the
    comparison with the float32 activations rounds it to float32."""
    interval = np.float32(hi - lo)
    return np.float32(float(hi) - float(interval) * (1 - p / 100))


def test_mammi_threshold_as_published():
    from dissectkit.builtin.methods.mammi import mammi_threshold

    rng = np.random.default_rng(0)
    lo = rng.normal(size=3000).astype(np.float32) - 2
    hi = lo + rng.gamma(2.0, size=3000).astype(np.float32)
    for p in (85.0, 93.0):
        got = mammi_threshold(torch.from_numpy(lo), torch.from_numpy(hi), p, "published").numpy()
        want = np.array([published_tau(a, b, p) for a, b in zip(lo, hi, strict=True)], np.float32)
        np.testing.assert_array_equal(got, want)
        default = mammi_threshold(torch.from_numpy(lo), torch.from_numpy(hi), p).numpy()
        assert default.dtype == np.float32 and (default != want).any()  # the two arithmetics differ sometimes
    # p = 93: an activation exactly on the larger of the two thresholds is selected by the other rule only
    k = int(np.flatnonzero(default != want)[0])
    A = torch.tensor([[lo[k]], [hi[k]], [max(default[k], want[k])]], dtype=torch.float32)
    sets = {}
    for precision in ("default", "published"):
        tau = mammi_threshold(A.min(0).values, A.max(0).values, 93.0, precision)
        sets[precision] = (A[:, 0] > tau).tolist()
    assert sets["default"] != sets["published"]


def test_mammi_precision_is_a_param_and_its_preset():
    r = dk.create("method", "mammi", precision="published")
    assert r.params.precision == "published"
    path = Path(dk.__file__).parent / "presets" / "mammi.yaml"
    assert yaml.safe_load(path.read_text())["methods"][0]["params"] == {"precision": "published"}


# --------------------------------------------------------------------------- precision: published
def reference_soft_wpmi(Im, T, A, top_k=100, a=10, lam=1, eps=1e-7, p_start=0.998, p_end=0.97):
    """soft-WPMI in float32, one neuron at a time, written from shared/docs/methods.md."""
    Im = Im / Im.norm(dim=-1, keepdim=True)
    T = T / T.norm(dim=-1, keepdim=True)
    P = Im @ T.T  # raw cosines, no logit scale
    Q = torch.softmax(a * P, dim=1)  # along the concept axis
    p = p_start - (torch.arange(top_k, dtype=torch.float32) / top_k) * (p_start - p_end)  # rank memberships
    K = A.shape[1]
    L = torch.zeros(K, P.shape[1])
    for k in range(K):
        top = torch.sort(A[:, k], descending=True, stable=True).indices[:top_k]  # ties: lower image index
        L[k] = torch.log(1 + p[:, None] * (Q[top] - 1) + eps).sum(0)
    prior = torch.logsumexp(L, dim=0) - torch.log(torch.tensor([float(K)]))
    return L - lam * prior


def reference_wpmi(Im, T, A, top_k=28, a=2, lam=0.6, eps=1e-7):
    Im = Im / Im.norm(dim=-1, keepdim=True)
    T = T / T.norm(dim=-1, keepdim=True)
    Q = torch.softmax(a * (Im @ T.T), dim=1)
    K = A.shape[1]
    L = torch.zeros(K, T.shape[0])
    for k in range(K):
        top = torch.sort(A[:, k], descending=True, stable=True).indices[:top_k]
        L[k] = torch.log(Q[top] + eps).sum(0)
    prior = torch.logsumexp(L, dim=0) - torch.log(torch.tensor([float(K)]))
    return L - lam * prior


def _inputs(seed=0, N=160, K=12, C=40, D=16):
    g = torch.Generator().manual_seed(seed)
    Im = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=1)
    T = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    A = torch.randn(N, K, generator=g).relu()
    A[:, 3] = 0.0  # a dead neuron
    A[:40, 5] = 1.0  # ties at the top
    return Im, T, A


@pytest.mark.parametrize("name, reference", [("soft_wpmi", reference_soft_wpmi), ("wpmi", reference_wpmi)])
def test_published_pmi_equals_the_float32_reference_loop(name, reference):
    Im, T, A = _inputs()
    sim = dk.create("similarity", name, precision="published")
    got = sim.from_embeddings(Im, T, A)
    want = reference(Im, T, A)
    assert torch.equal(got, want)  # bit for bit: the same float32 operations in the same order
    default = dk.create("similarity", name).from_embeddings(Im, T, A)
    diff = float((default - want).abs().max())
    assert 0 < diff <= sim.score_tolerance(want, Im.shape[0])  # the arithmetics differ within the tolerance


def test_published_cos_and_cos3_follow_the_published_formulas():
    Im, T, A = _inputs(1)
    P = (Im / Im.norm(dim=-1, keepdim=True)) @ (T / T.norm(dim=-1, keepdim=True)).T
    cos = dk.create("similarity", "cos", precision="published").from_embeddings(Im, T, A)
    want = (A / A.norm(dim=0, keepdim=True)).T @ (P / P.norm(dim=0, keepdim=True))
    torch.testing.assert_close(cos, want, rtol=0, atol=0, equal_nan=True)
    assert cos[3].isnan().all()  # a zero column gives NaN, as published
    Pc, Ac = (P - P.mean(0, keepdim=True)) ** 3, (A - A.mean(0, keepdim=True)) ** 3
    want3 = (Ac / Ac.norm(dim=0, keepdim=True).clip(1e-3)).T @ (Pc / Pc.norm(dim=0, keepdim=True).clip(1e-3))
    assert torch.equal(dk.create("similarity", "cos3", precision="published").from_embeddings(Im, T, A), want3)
    rr = dk.create("similarity", "rank_reorder", precision="published").from_embeddings(Im, T, A)
    default = dk.create("similarity", "rank_reorder").from_embeddings(Im, T, A)
    assert torch.equal(rr.argmax(1), default.argmax(1)) and torch.allclose(rr, default, atol=1e-4)


def test_clip_dissect_published_labels_constant_neurons_as_published():
    from dissectkit.labelling.evidence import Evidence

    Im, T, A = _inputs(2)
    names = [f"c{i}" for i in range(T.shape[0])]
    ev = Evidence("l", A, Im, names, lambda texts: T[[names.index(t) for t in texts]])
    default = dk.create("method", "clip-dissect").label(ev)
    published = dk.create("method", "clip-dissect", precision="published").label(ev)
    assert default.neurons[3] == [] and default.reasons[3] == "dead"
    assert published.neurons[3] and published.reasons[3] == "dead"  # labelled, and known to be constant
    want = reference_soft_wpmi(Im, T, A)
    assert [ranked[0][0] for ranked in published.neurons] == [names[j] for j in want.argmax(1).tolist()]
    assert published.params["precision"] == "published" and published.tolerance > 0
    with pytest.raises(Exception, match="precision is 'published' but similarity_params.precision is 'default'"):
        dk.create("method", "clip-dissect", precision="published", similarity_params={"precision": "default"})


@pytest.mark.slow
def test_synthetic_study_published_precision_equals_the_reference_loop(tmp_path):
    """The acceptance: on the synthetic study with ``precision: published`` (the mcd preset), every
    neuron's top-1 label equals the float32 reference loop's; the report shows margins and near ties."""
    from dissectkit.engine.cache import Cache

    recipe = dk.load_recipe(RECIPES / "study_synthetic.yaml", overrides=[
        "probe.params.n=150", f"output.dir={tmp_path / 'run'}", f"runtime.cache_dir={tmp_path / 'cache'}",
        "runtime.device=cpu", "output.reporters=[json, {name: html, params: {top_images: 0}}]"])
    assert recipe.methods[0].params["precision"] == "published"
    result = dk.run(recipe)
    names = [c.text for c in result.concepts]
    (dissector,) = result.dissectors.values()
    T = Cache(tmp_path / "cache").load_texts(dissector.fingerprint(), names)
    Im = result.image_embeddings("synth-clip").float()
    total = agree = 0
    for ls in result.label_sets:
        for layer, ll in ls.layers.items():
            want = reference_soft_wpmi(Im, T, result.activations(ls.target, layer).float())
            ref = [names[j] for j in want.argmax(1).tolist()]
            got = [r[0][0] if r else None for r in ll.neurons]
            total += len(got)
            agree += sum(g == w for g, w in zip(got, ref, strict=True))
            assert "margin" in ls.columns[layer] and "near_tie" in ls.columns[layer]
    assert total > 300 and agree == total
    pages = "".join(page.read_text() for page in (tmp_path / "run").glob("report*.html"))
    assert "margin over the next concept" in pages


# --------------------------------------------------------------------------- margins
def test_margins_and_near_ties():
    from dissectkit.labelling.margins import margins

    ll = LayerLabels("l", "m", {}, [[("a", 2.0), ("b", 1.0)], [("a", 1.0), ("b", 1.0 - 1e-6)], [("a", 3.0)], [], [("a", 1.0)]],
                     tolerance=1e-5, runner_up={2: 2.5})
    got = margins(ll)
    assert got["margin"][:2] == [1.0, pytest.approx(1e-6)] and got["margin"][2] == 0.5
    assert got["near_tie"] == [False, True, False, None, None]  # no second score: unknown
    assert margins(ll, tolerance=0.6)["near_tie"][2] is True
    ll.tolerance = None  # a method without a tolerance: a few float32 roundings of the scores
    assert margins(ll)["near_tie"][:2] == [False, False]
    exact = LayerLabels("l", "m", {}, [[("a", 1.0), ("b", 1.0)]])
    assert margins(exact)["near_tie"] == [True]  # an exact tie is always a coin toss


def test_mammi_lists_carry_the_runner_up_for_margins():
    from dissectkit.labelling.evidence import Evidence

    Im, T, A = _inputs(3, C=6)
    names = [f"c{i}" for i in range(T.shape[0])]
    ev = Evidence("l", A, Im, names, lambda texts: torch.nn.functional.normalize(
        torch.randn(len(texts), Im.shape[1], generator=torch.Generator().manual_seed(len(texts[0]))), dim=1))
    ll = dk.create("method", "mammi", beta=0.999).label(ev)
    singles = [k for k, r in enumerate(ll.neurons) if len(r) == 1]
    assert singles and all(k in ll.runner_up and ll.runner_up[k] < ll.neurons[k][0][1] for k in singles)
    assert ll.tolerance is not None and math.isfinite(ll.tolerance)
    again = LayerLabels.from_dict(ll.to_dict())
    assert again.runner_up == ll.runner_up and again.tolerance == ll.tolerance


# --------------------------------------------------------------------------- Mammo-CLIP's PNG conversion
def published_count(flags: np.ndarray) -> list[int]:
    """The published breast extraction's run lengths, from the issue's description: a run that
    touches the edge of the array is counted one shorter."""
    runs, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i))
            start = None
    n = len(flags)
    counted = [(a, b, b - a - (a == 0) - (b == n)) for a, b in runs]
    best = max(c for *_, c in counted)
    return [i for a, b, c in counted if c == best for i in range(a, b)]


def test_an_edge_touching_breast_ties_with_a_strip_one_shorter():
    """The breast touches the image edge (200 columns) and a second bright strip is 199 columns wide:
    the published extraction keeps both (399 columns)."""
    from dissectkit.imaging.mammo_png import extract_breast, longest_runs

    rng = np.random.default_rng(0)
    img = np.zeros((300, 600), np.uint8)
    img[:, :200] = rng.integers(60, 250, (300, 200))  # the breast, against the left edge
    img[:, 300:499] = rng.integers(60, 250, (300, 199))  # a strip (a label, a paddle edge)
    rows, cols = extract_breast(img)
    assert len(cols) == 399 and cols[0] == 0 and cols[-1] == 498
    band = img[150 - 120 : 150 + 120]
    flags = band.max(0) != band.min(0)
    assert list(longest_runs(flags)) == published_count(flags)
    for flags in (np.array([1, 1, 0, 1, 0, 1, 1], bool), np.array([0, 1, 1, 0, 1], bool), np.ones(5, bool)):
        assert list(longest_runs(flags)) == published_count(flags)


def test_a_rescaled_dicom_is_converted_in_float32_as_published(tmp_path):
    """Rescale slope 0.7: the published reader applies it in float32 and the min-max runs in float32;
    pixels move by one level against the exact arithmetic."""
    import cv2
    from dicom_factory import mammogram, write_dicom

    from dissectkit.imaging.mammo_png import from_dicom

    stored = mammogram(400, 260, seed=4).astype(np.uint16)
    breast = stored > 1000
    stored[breast] = np.random.default_rng(5).integers(41, 4096, int(breast.sum()))  # the whole 12-bit range
    path = write_dicom(tmp_path / "r.dcm", stored, rescale=(0.7, 0.0))
    x = stored.astype(np.float32) * np.float32(0.7) + np.float32(0.0)  # the published reader, float32
    x = x[5:-5, 5:-5]
    x = x - x.min()
    x = x / x.max()
    u8 = (x * 255).astype(np.uint8)
    exact = ((stored[5:-5, 5:-5] - stored[5:-5, 5:-5].min()) / float(np.ptp(stored[5:-5, 5:-5])) * 255).astype(np.uint8)
    assert (u8 != exact).sum() > 0  # the float32 rescale moves some pixels by one level
    from dissectkit.imaging.mammo_png import extract_breast

    rows, cols = extract_breast(u8)
    want = cv2.resize(u8[np.ix_(rows, cols)], (912, 1520), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(from_dicom(path), want)
    plain = write_dicom(tmp_path / "p.dcm", stored)  # no rescale: the stored pixels, as before
    rows, cols = extract_breast(exact)
    np.testing.assert_array_equal(from_dicom(plain), cv2.resize(exact[np.ix_(rows, cols)], (912, 1520),
                                                                interpolation=cv2.INTER_AREA))
