"""Label quality without ground truth: checked against a direct (loop) computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.types import Concept
from dissectkit.labelling.evidence import LayerLabels
from dissectkit.labelling.quality import Z_MIN, average_ranks, label_quality, layer_quality
from dissectkit.results.run_result import LabelSet, RunResult
from dissectkit.synthetic.training import auc


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks by an explicit loop over values (1-based)."""
    out = np.empty(len(x))
    for i, v in enumerate(x):
        out[i] = (x < v).sum() + ((x == v).sum() + 1) / 2
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def test_average_ranks_with_ties():
    x = torch.tensor([[3.0, 1.0], [1.0, 1.0], [3.0, 2.0], [2.0, 0.0], [3.0, 1.0]])
    got = average_ranks(x).numpy()
    for j in range(2):
        np.testing.assert_allclose(got[:, j], _ranks(x[:, j].numpy()))
    assert got[:, 0].tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


@pytest.fixture
def evidence():
    g = torch.Generator().manual_seed(0)
    N, K, D, C = 80, 6, 16, 23
    V = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=1)
    T = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    P = V @ T.T
    A = torch.randn(N, K, generator=g)
    A[:, 0] = torch.relu(3 * P[:, 4] - 0.05)  # follows concept 4, with ties at 0
    A[:, 1] = -P[:, 7]  # anti-follows concept 7
    A[:, 2] = 1.5  # dead neuron
    return A, V, T, P


def test_layer_quality_matches_direct_computation(evidence):
    A, V, T, P = evidence
    labels = [4, 7, 3, None, 11, 0]
    got = layer_quality(A, V, T, labels, top_fraction=0.1, concept_block=5, neuron_block=4)  # several blocks
    An, Pn = A.numpy().astype(np.float64), P.numpy().astype(np.float64)
    N, C = Pn.shape
    n1 = math.ceil(0.1 * N)
    for k, c in enumerate(labels):
        if c is None or k == 2:
            assert all(got[col][k] is None for col in got), (k, got)
            continue
        rho = _spearman(An[:, k], Pn[:, c])
        everyone = np.array([_spearman(An[:, k], Pn[:, j]) for j in range(C)])
        z = (rho - everyone.mean()) / everyone.std()
        top = np.argsort(-An[:, k], kind="stable")[:n1]
        is_top = np.zeros(N, bool)
        is_top[top] = True
        assert got["sim_corr"][k] == pytest.approx(rho, abs=1e-5)
        assert got["sim_z"][k] == pytest.approx(z, abs=1e-4)
        assert got["top_auc"][k] == pytest.approx(auc(Pn[:, c], is_top), abs=1e-9)
        assert got["interpretable"][k] == (z >= Z_MIN and rho > 0)
    assert got["sim_corr"][1] == pytest.approx(-1.0, abs=1e-6) and got["top_auc"][1] == pytest.approx(0.0)
    assert got["sim_corr"][0] > 0.9 and got["top_auc"][0] == pytest.approx(1.0) and got["interpretable"][0] is True


def test_label_quality_uses_top1_and_bare_concepts(evidence):
    A, V, T, P = evidence
    names = [f"c{i}" for i in range(T.shape[0])]
    seen: list[list[str]] = []

    def encode(texts):
        seen.append(list(texts))
        return T

    ll = LayerLabels("l", "m", {}, [[("c4", 1.0), ("c1", 0.5)], [], [("c3", 0.2)], [("unknown", 1.0)], [("c11", 0.1)],
                                   [("c0", 0.0)]])
    got = label_quality(A, V, encode, [Concept(n) for n in names], ll)
    assert seen == [names]
    direct = layer_quality(A, V, T, [4, None, 3, None, 11, 0])
    assert got == direct


def test_quality_columns_in_rows_and_labels_json(tmp_path):
    ls = LabelSet("d", "t", "m", {"l": LayerLabels("l", "m", {}, [[("a", 0.5)], []])},
                  {"l": {"sim_corr": [0.25, None], "top_auc": [0.75, None], "sim_z": [2.5, None],
                         "interpretable": [True, None]}})
    run = RunResult("r", tmp_path, {}, [Concept("a", "cat")], ["0", "1"], [ls])
    rows = list(run.rows())
    assert [(r["sim_corr"], r["top_auc"], r["sim_z"], r["interpretable"]) for r in rows] == [
        (0.25, 0.75, 2.5, True), (None, None, None, None)]
    import json

    (tmp_path / "labels.json").write_text(json.dumps(run.labels_payload()))
    again = RunResult.load(tmp_path)
    assert again.label_sets[0].columns == {"l": {**ls.columns["l"], "label_supported": [True, None]}}
    import csv

    from dissectkit.report.tables import neuron_rows, write_csv

    with write_csv(neuron_rows(again), tmp_path / "neurons.csv").open() as fh:
        got = list(csv.DictReader(fh))
    names = ("sim_corr", "top_auc", "sim_z", "label_supported", "interpretable")
    header = list(got[0])
    assert [header.index(c) for c in names[:4]] == sorted(header.index(c) for c in names[:4])  # the quality group's order
    # a run written before the rename has only 'interpretable': it reads as label_supported too
    assert [got[0][c] for c in names] == ["0.25", "0.75", "2.5", "1", "1"] and [got[1][c] for c in names] == [""] * 5


def test_output_columns_turn_a_group_off_and_name_unknown_groups(tmp_path):
    from dissectkit.base.errors import RecipeError
    from dissectkit.host.recipe import recipe_from_dict
    from dissectkit.labelling.column_groups import settings

    assert settings({"quality": False})["quality"] is None
    with pytest.raises(RecipeError, match="unknown column group 'qualty'. Did you mean 'quality'"):
        settings({"qualty": False})
    with pytest.raises(RecipeError, match="output.columns.quality"):
        settings({"quality": {"top_fraction": 0.1}})
    recipe = recipe_from_dict({
        "dissector": "synth-clip", "target": {"name": "synth-effnet-concepts", "layers": ["classifier"]},
        "probe": {"name": "synth-mammo", "params": {"n": 24}}, "concepts": {"name": "synth-mammo-concepts", "params": {"groups": ["findings"]}},
        "method": {"name": "clip-dissect", "params": {"similarity": "cos"}},
        "output": {"dir": str(tmp_path / "run"), "reporters": ["csv"], "columns": {"quality": False, "grounding": False}},
        "runtime": {"device": "cpu"},
    })
    result = dk.run(recipe)
    columns = set(result.label_sets[0].columns["classifier"])
    assert "sim_z" not in columns and {"stability", "stability_group", "score_lo", "score_hi", "margin"} <= columns
    assert all(row["sim_z"] is None for row in result.rows())
