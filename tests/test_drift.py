"""Neuron drift through fine-tuning (study/drift.py): the planted drift of the synthetic world keeps the
function and is found by the study's drift.csv; the rows of a reloaded run, gained and lost concepts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.types import Concept
from dissectkit.labelling.evidence import LayerLabels
from dissectkit.results.run_result import LabelSet, RunResult
from dissectkit.study import run_study
from dissectkit.study.drift import DRIFT, spearman_columns
from dissectkit.synthetic.training import DRIFT_LAYER, plant_drift

ROOT = Path(__file__).resolve().parents[1]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_planted_drift_keeps_the_function_and_swaps_the_units():
    from dissectkit.synthetic.models import MODEL_INPUT, build_effnet

    torch.manual_seed(0)
    model = build_effnet(3).eval()
    state = model.state_dict()
    planted, units = plant_drift(state, pairs=4, seed=3)
    assert len(units) == 8 == len(set(units))
    other = build_effnet(3).eval()
    other.load_state_dict(planted)
    x = torch.randn(2, 3, *MODEL_INPUT)
    feats = {}
    for name, m in (("a", model), ("b", other)):
        m.eval()
        with torch.no_grad():
            feats[name] = m.blocks[:7](m.bn1(m.conv_stem(x)))
            torch.testing.assert_close(m(x), model(x), rtol=1e-4, atol=1e-5)  # the same function
    a, b = feats["a"].mean((2, 3)), feats["b"].mean((2, 3))
    moved = [u for u in range(a.shape[1]) if not torch.allclose(a[:, u], b[:, u])]
    assert moved == units  # exactly the planted units of DRIFT_LAYER carry another unit's feature
    assert sorted(int(torch.argmin((a - b[:, u : u + 1]).abs().sum(0))) for u in units) == units  # a swap


def test_spearman_columns_matches_a_direct_rank_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    b = np.stack([a[:, 0], -a[:, 1] ** 3, rng.normal(size=50), np.zeros(50)], 1)
    b[:10, 2] = 0.0  # ties
    rho = spearman_columns(a, b)
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0) and rho[3] is None

    def ranks(v):
        return np.array([np.mean(np.flatnonzero(np.sort(v) == x)) for x in v])

    ra, rb = ranks(a[:, 2]), ranks(b[:, 2])
    assert rho[2] == pytest.approx(np.corrcoef(ra, rb)[0, 1])


def _ll(layer: str, neurons: list[list[tuple[str, float]]]) -> LayerLabels:
    return LayerLabels(layer, "clip-dissect", {}, neurons)


def test_drift_rows_of_a_reloaded_run_name_gained_and_lost_concepts(tmp_path):
    concepts = [Concept("a", "Mass", "shape"), Concept("b", "Mass", "margin"), Concept("c", "General", "objects")]
    m = LabelSet("dis", "m", "clip-dissect", {"y0": _ll("y0", [[("a", 0.5)], [("c", 1.5)]]),
                                              "y1": _ll("y1", [[("a", 1.0)], [("a", 1.0)], []])})
    c = LabelSet("dis", "c1", "clip-dissect", {"y0": _ll("y0", [[("c", 2.0)], [("b", 0.0)]]),
                                               "y1": _ll("y1", [[("b", 2.0)], [("c", 0.0)]])})
    recipe = {"targets": [{"name": "m", "role": "M"}, {"name": "clf", "label": "c1", "role": "C-mass"}],
              "output": {"reporters": [{"name": "study", "params": {"general_categories": ["General"]}}]}}
    run_study(RunResult("study", tmp_path, recipe, concepts, ["0", "1"], [m, c]))
    rows = _read(tmp_path / "study" / "drift.csv")
    assert list(rows[0]) == list(DRIFT)
    assert [(r["layer"], r["unit"]) for r in rows] == [("y0", "0"), ("y0", "1")]  # y1 differs in units: skipped
    assert [(r["label_from"], r["label_to"], r["mammography_change"]) for r in rows] == [("a", "c", "lost"), ("c", "b", "gained")]
    assert [r["concept_changed"] for r in rows] == ["1", "1"] and [r["category_changed"] for r in rows] == ["1", "1"]
    assert all(r["spearman"] == "" for r in rows)  # a reloaded run has no activations
    assert (tmp_path / "study" / "drift.png").is_file()
    assert "drift.csv" in (tmp_path / "study" / "study.html").read_text()


def test_synthetic_study_drift_finds_the_planted_units(tmp_path):
    recipe = dk.load_recipe(ROOT / "recipes" / "study_synthetic.yaml", overrides=[
        "probe.params.n=200", f"output.dir={tmp_path / 'run'}", f"runtime.cache_dir={tmp_path / 'cache'}",
        "runtime.device=cpu", "output.reporters=[csv, {name: study, params: {general_categories: [distractor]}}]",
        *(f"targets.{i}.layers=[blocks.5, {DRIFT_LAYER}]" for i in range(3)),
    ])
    dk.run(recipe)
    rows = _read(tmp_path / "run" / "study" / "drift.csv")
    assert {(r["from_role"], r["to_role"]) for r in rows} == {("M", "C")}  # G is no starting point
    assert [sum(r["layer"] == la for r in rows) for la in ("blocks.5", DRIFT_LAYER)] == [96, 160]  # one row per unit
    world = json.loads((ROOT / "dissectkit" / "synthetic" / "weights" / "synth_world.json").read_text())["planted_drift"]
    assert world["layer"] == DRIFT_LAYER
    mine = [r for r in rows if r["layer"] == DRIFT_LAYER]
    planted = [float(r["spearman"]) for r in mine if int(r["unit"]) in world["units"]]
    others = [float(r["spearman"]) for r in mine if int(r["unit"]) not in world["units"]]
    assert len(planted) == len(world["units"]) and max(planted) < min(others)  # the planted units separate fully
    assert np.mean(planted) < 0.2 < 0.6 < np.mean(others)
    assert all(r["concept_changed"] == "1" for r in mine if int(r["unit"]) in world["units"])
    assert {r["mammography_change"] for r in rows} <= {"", "gained", "lost"}
    assert (tmp_path / "run" / "study" / "drift.png").is_file()
