"""Measures on hand-checked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from dissectkit.base.errors import EvidenceError
from dissectkit.base.types import Concept
from dissectkit.labelling.evidence import LayerLabels
from dissectkit.labelling.measures import (
    agreement,
    final_layer_accuracy,
    global_threshold,
    global_threshold_counts,
    layer_threshold,
    list_measures,
    meets_threshold,
    threshold_of_scores,
)


def L(*neurons, layer="fc", method="m"):
    return LayerLabels(layer=layer, method=method, neurons=[list(n) for n in neurons])


def test_final_layer_accuracy():
    labels = L(
        [("cat", 0.9), ("dog", 0.5)],
        [("dog", 0.8), ("cat", 0.7), ("a", 0.1), ("b", 0.0), ("c", -1.0), ("fish", -2.0)],
        [("fish", 0.3)],
        [],
        [("bird", 0.2)],
    )
    truth = ["cat", "cat", "fish", "cat", None]
    out = final_layer_accuracy(labels, truth)
    assert out["n"] == 4
    assert out["top1"] == pytest.approx(2 / 4)  # neurons 0 and 2
    assert out["top5"] == pytest.approx(3 / 4)  # + neuron 1 (cat at rank 2)
    assert out["cos"] is None

    vec = {"cat": [1.0, 0.0], "dog": [0.6, 0.8], "fish": [0.0, 2.0]}
    out = final_layer_accuracy(labels, truth, text_encoder=lambda ts: torch.tensor([vec[t] for t in ts]))
    # cos: cat/cat 1, dog/cat 0.6, fish/fish 1, no label 0 -> 2.6 / 4
    assert out["cos"] == pytest.approx(2.6 / 4)
    with pytest.raises(EvidenceError, match="5 labelled neurons but 2"):
        final_layer_accuracy(labels, ["cat", "dog"])


def test_list_measures():
    labels = L([("a", 1), ("b", 1)], [("c", 1)], [], [("a", 1)])
    truth = [{"a"}, {"a", "c"}, {"b"}, set()]
    out = list_measures(labels, truth)  # neuron 3 has no truth -> excluded
    hit = [1, 1, 0]
    prec = [0.5, 1.0, 0.0]
    rec = [1.0, 0.5, 0.0]
    f1 = [2 * 0.5 / 1.5, 2 * 0.5 / 1.5, 0.0]
    for key, xs in (("hit_rate", hit), ("precision", prec), ("recall", rec), ("f1", f1)):
        mean = sum(xs) / 3
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / 2)
        assert out[key].value == pytest.approx(mean)
        assert out[key].se == pytest.approx(sd / math.sqrt(3))
        assert out[key].n == 3
    assert out["hit_rate"].value == pytest.approx(2 / 3)
    assert out["hit_rate"].se == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))


def test_layer_and_global_thresholds():
    a = L([("mass", 0.30)], [("calcification", 0.20)], [("skin", 0.40)], [])  # mean 0.30
    b = L([("mass", 0.25)], [("mass", 0.36)], [("skin", 0.31)], [("dog", 0.5)])  # mean 0.355
    assert layer_threshold(a) == pytest.approx(0.30)
    concepts = [
        Concept("mass", "findings", "masses"),
        Concept("calcification", "findings", "calcifications"),
        Concept("skin", "anatomy", None),
        Concept("dog"),
    ]
    out = global_threshold_counts(a, b, concepts)
    assert out["threshold"] == pytest.approx(0.355)
    assert out["a"] == {"above": 1, "category": {"(none)": 1}, "broad_category": {"anatomy": 1}}
    assert out["b"] == {
        "above": 2,
        "category": {"masses": 1, "(none)": 1},
        "broad_category": {"findings": 1, "(none)": 1},
    }
    # a layer without any labelled neuron has no threshold; the global one is then the other's
    nobody = L([], [])
    assert layer_threshold(nobody) is None and threshold_of_scores([]) is None
    assert threshold_of_scores([0.30, 0.20, 0.40]) == layer_threshold(a)  # one formula: scores or LayerLabels
    one_sided = global_threshold_counts(nobody, b, concepts)
    assert one_sided["threshold"] == pytest.approx(0.355) and one_sided["a"]["above"] == 0
    assert one_sided["b"] == out["b"]
    neither = global_threshold_counts(nobody, nobody, concepts)
    assert neither["threshold"] is None and neither["a"] == neither["b"] == {"above": 0, "category": {}, "broad_category": {}}
    assert global_threshold([None, 0.2, 0.5, None]) == 0.5 and global_threshold([None]) is None
    assert not meets_threshold(0.9, None) and not meets_threshold(None, 0.1) and meets_threshold(0.355, 0.355)


def test_agreement():
    a = L([("x", 1), ("y", 0)], [("x", 1)], [("y", 1), ("z", 0)], [])
    b = L([("x", 1), ("z", 0)], [("y", 1)], [("y", 1), ("z", 0)], [])
    out = agreement(a, b)
    assert out.top1 == pytest.approx(3 / 4)  # neurons 0, 2 and 3 (None == None)
    # Jaccard: {x,y}/{x,z} = 1/3; {x}/{y} = 0; {y,z}/{y,z} = 1; empty/empty = 1
    assert out.top5_jaccard == pytest.approx((1 / 3 + 0 + 1 + 1) / 4)
    # kappa: a = x,x,y,None ; b = x,y,y,None; pe = (2*1 + 1*2 + 1*1) / 16 = 5/16
    pe = 5 / 16
    assert out.kappa == pytest.approx((0.75 - pe) / (1 - pe))
    same = agreement(L([("x", 1)], [("x", 1)]), L([("x", 2)], [("x", 3)]))
    assert (same.top1, same.kappa, same.top5_jaccard) == (1.0, 1.0, 1.0)
    with pytest.raises(EvidenceError, match="neurons"):
        agreement(a, L([]))


def test_every_report_reads_the_one_layer_threshold(tmp_path):
    """The summary plots, the comparison and the study take each layer's threshold from
    ``layer_threshold`` (``None`` for a layer without labelled neurons) and the global one from
    ``global_threshold``."""
    from dissectkit.report import pair_measures
    from dissectkit.report.plot_process import summary_data
    from dissectkit.results.run_result import LabelSet, RunResult
    from dissectkit.study.analysis import analyse

    concepts = [Concept("mass", "findings", "masses"), Concept("skin", "anatomy", None)]
    g = LabelSet("d", "g", "clip-dissect", {"x0": L([("mass", 0.1)], [("skin", 0.7)], [], layer="x0"),
                                            "x1": L([], [], layer="x1")})
    m = LabelSet("d", "m", "clip-dissect", {"y0": L([("skin", 0.3)], [("mass", 0.2)], layer="y0"),
                                            "y1": L([], [("mass", 0.6)], layer="y1")})
    recipe = {"targets": [{"name": "g", "role": "G"}, {"name": "m", "role": "M"}]}
    run = RunResult("t", tmp_path, recipe, concepts, ["0", "1", "2"], [g, m])
    plotted = {s["key"]: s["thresholds"] for s in summary_data(run)["sets"]}
    for ls in run.label_sets:
        assert plotted[ls.key] == {layer: layer_threshold(ll) for layer, ll in ls.layers.items()}
    assert plotted[g.key]["x1"] is None
    (group,) = analyse(run)
    rows = {(r["target"], r["layer"]): r for r in group.thresholds}
    for ls in run.label_sets:
        for layer, ll in ls.layers.items():
            assert rows[(ls.target, layer)]["threshold"] == layer_threshold(ll)
    assert rows[("g", "x1")]["threshold"] is None
    assert rows[("g", "x0")]["global_threshold"] == global_threshold([layer_threshold(g.layers["x0"]),
                                                                     layer_threshold(m.layers["y0"])])
    assert rows[("m", "y1")]["global_threshold"] == layer_threshold(m.layers["y1"]) == 0.6
    compared = pair_measures.global_threshold_counts(g.layers["x1"], m.layers["y1"], {c.text: c for c in concepts})
    assert (compared["threshold_a"], compared["threshold_b"], compared["global"]) == (None, 0.6, 0.6)
