"""Label stability under probe resampling (docs/methods.md, "Label stability"): the resampled scores of
every built-in method equal the method run on the resampled probe (rows repeated by their counts),
all resamples come from one set of passes, and the columns reach the tables, the cards and compare."""

from __future__ import annotations

import math

import pytest
import torch

import dissectkit as dk
from dissectkit.builtin.methods._common import checked_inputs, encode, unit_rows
from dissectkit.builtin.resampled import resampled_scores
from dissectkit.builtin.similarities import LazyP
from dissectkit.labelling.evidence import Evidence
from dissectkit.labelling.stability import (
    ResampledLabels,
    ResampledScores,
    Resamples,
    label_indices,
    stability_columns,
)
from dissectkit.labelling.streaming import ActivationStream
from dissectkit.testing import planted_evidence


def _evidence(n: int = 300, k: int = 6, seed: int = 0, masks: bool = False) -> Evidence:
    ev = planted_evidence(n_images=n, n_neurons=k, seed=seed, masks=masks)
    g = torch.Generator().manual_seed(seed + 7)
    ev.activations = ev.activations + 0.4 * torch.rand(ev.activations.shape, generator=g)  # labels can flip
    return ev


def _repeated(ev: Evidence, counts: torch.Tensor) -> Evidence:
    """The evidence of one resample: row i repeated counts[i] times, in order."""
    rows = torch.repeat_interleave(torch.arange(ev.n_images), counts.long())
    return Evidence(ev.layer, ev.activations[rows], ev.image_embeddings[rows], ev.concepts, ev.encode_texts)


def test_resamples_are_seeded_bootstrap_counts():
    r = Resamples(5, 1000, seed=3)
    assert r.counts.dtype == torch.uint8 and r.counts.shape == (5, 1000)
    assert r.counts.long().sum(1).tolist() == [1000] * 5  # N draws with replacement
    assert 0.55 < float((r.counts > 0).float().mean()) < 0.71  # about 1 - 1/e of the rows drawn
    assert torch.equal(r.counts, Resamples(5, 1000, seed=3).counts)
    assert not torch.equal(r.counts, Resamples(5, 1000, seed=4).counts)
    half = Resamples(3, 1000, seed=3, fraction=0.5)
    assert half.size == 500 and half.counts.long().sum(1).tolist() == [500] * 3
    assert torch.equal(r.weights(10, 20), r.counts[:, 10:20].float())


@pytest.mark.parametrize("similarity,params", [
    ("cos", {}), ("wpmi", {"lam": 0.0}), ("soft_wpmi", {"lam": 0.0}), ("rank_reorder", {}),
])
def test_resampled_similarity_scores_equal_the_similarity_on_the_resampled_probe(similarity, params):
    """With lam = 0 (no layer prior) every score of a resample is the similarity's own score on the
    probe whose rows are repeated by their counts."""
    ev = _evidence()
    sim = dk.create("similarity", similarity, **params)
    A, V = checked_inputs(ev)
    T = encode(ev, ev.concept_texts)
    R = Resamples(4, ev.n_images, seed=1, candidates=5)
    got = resampled_scores(sim, unit_rows(V), T, ActivationStream.from_tensor(ev.activations, rows=37), R)
    assert isinstance(got, ResampledScores) and got.scores.shape == (4, 6, 5)
    full = sim(LazyP(unit_rows(V), T), ev.activations)
    expect = torch.sort(full, dim=1, descending=True, stable=True).indices[:, :5]
    assert torch.equal(got.candidates.cpu(), expect)
    for b in range(4):
        rep = _repeated(ev, R.counts[b])
        S = sim(LazyP(unit_rows(rep.image_embeddings), T), rep.activations)
        torch.testing.assert_close(got.scores[b].float(), S.gather(1, got.candidates), rtol=2e-4, atol=2e-4)


def test_resampled_soft_wpmi_reforms_the_layer_prior():
    """soft_wpmi with its prior: a small layer (K <= 32 neurons) forms the prior again in every
    resample exactly, so each resample is the similarity run on the resampled probe."""
    ev = _evidence()
    sim = dk.create("similarity", "soft_wpmi")
    A, V = checked_inputs(ev)
    T = encode(ev, ev.concept_texts)
    R = Resamples(3, ev.n_images, seed=2, candidates=8)
    got = resampled_scores(sim, unit_rows(V), T, ev.activations, R)
    for b in range(3):
        rep = _repeated(ev, R.counts[b])
        S = sim(LazyP(unit_rows(rep.image_embeddings), T), rep.activations)
        torch.testing.assert_close(got.scores[b].float(), S.gather(1, got.candidates), rtol=1e-3, atol=1e-3)


def test_resampled_cos3_centres_at_the_full_probe_means():
    ev = _evidence()
    sim = dk.create("similarity", "cos3")
    A, V = checked_inputs(ev)
    V = unit_rows(V)
    T = encode(ev, ev.concept_texts)
    R = Resamples(2, ev.n_images, seed=5, candidates=4)
    got = resampled_scores(sim, V, T, ev.activations, R)
    P = V @ T.T
    A3 = (ev.activations - ev.activations.mean(0)) ** 3
    P3 = (P - P.mean(0)) ** 3
    for b in range(2):
        w = R.counts[b].double().unsqueeze(1)
        S = (A3.double().T @ (w * P3.double())) / (w * A3.double() ** 2).sum(0).sqrt().unsqueeze(1) \
            / (w * P3.double() ** 2).sum(0).sqrt()
        torch.testing.assert_close(got.scores[b], S.gather(1, got.candidates.long()), rtol=1e-4, atol=1e-5)


def test_resampled_mammi_equals_mammi_on_the_resampled_probe():
    from dissectkit.builtin.methods.mammi import mammi_scores

    ev = _evidence()
    method = dk.create("method", "mammi")
    labels = method.label(ev)
    R = Resamples(4, ev.n_images, seed=1, candidates=8)  # every concept is a candidate
    got = method.label_resampled(ev, labels, R)
    tpl = method.params.template
    names = ev.concept_texts
    emb = encode(ev, [tpl.format(c) for c in names] + [tpl.format("").strip()])
    for b in range(4):
        rep = _repeated(ev, R.counts[b])
        S, _ = mammi_scores(rep.activations, rep.image_embeddings, emb[:-1], emb[-1], method.params.percentile)
        best = S.double().argmax(1)
        assert got.top1[b].tolist() == [int(c) if float(S[k, c]) > 0 else -1 for k, c in enumerate(best)]
        lab = label_indices(labels, names)
        torch.testing.assert_close(got.score[b], S.double().gather(1, lab.view(-1, 1)).squeeze(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kept", [1, 48])
def test_resampled_ranges_are_the_drawn_rows_extremes(monkeypatch, kept):
    """MAMMI's threshold needs each resample's range: from the kept extreme rows, else (1 row kept:
    often not drawn) from the masked second pass."""
    from dissectkit.builtin.methods import _resampled as resampled

    monkeypatch.setattr(resampled, "RANGE_ROWS", kept)
    A = torch.randn(300, 7, generator=torch.Generator().manual_seed(0))
    for fraction in (1.0, 0.3):
        R = Resamples(6, 300, seed=1, fraction=fraction)
        lo, hi = resampled._resampled_range(ActivationStream.from_tensor(A, rows=50), R, "cpu")
        for b in range(6):
            drawn = A[R.counts[b] > 0]
            assert torch.equal(lo[b], drawn.amin(0)) and torch.equal(hi[b], drawn.amax(0))


def test_resampled_netdissect_weights_the_images_at_the_full_probe_thresholds():
    ev = _evidence(n=96, masks=True)
    method = dk.create("method", "netdissect")
    labels = method.label(ev)
    R = Resamples(3, ev.n_images, seed=4)
    got = method.label_resampled(ev, labels, R)
    names = ev.concept_texts
    K = ev.activations.shape[1]
    T = method.thresholds(ev, 0, K, "cpu")
    maps = torch.cat([b.maps for b in ev.spatial_maps()])
    masks = [m for b in ev.spatial_maps() for m in b.masks]
    M = maps > T.view(1, -1, 1, 1)  # the maps are on the masks' 8 x 8 grid already
    for b in range(3):
        w = R.counts[b].double()
        inter = torch.zeros(K, len(names), dtype=torch.float64)
        lab = torch.zeros(len(names), dtype=torch.float64)
        for i, mk in enumerate(masks):
            for c, region in mk.items():
                j = names.index(c)
                r = torch.from_numpy(region)
                inter[:, j] += w[i] * (M[i] & r).flatten(1).sum(1)
                lab[j] += w[i] * r.sum()
        act = (w.view(-1, 1) * M.flatten(2).sum(2)).sum(0)
        union = act.view(-1, 1) + lab - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))
        best, arg = iou.max(1)
        expect = torch.where(best >= method.params.min_iou, arg, torch.full_like(arg, -1))
        assert got.top1[b].tolist() == expect.tolist()
        lab_idx = label_indices(labels, names)
        torch.testing.assert_close(got.score[b], iou.gather(1, lab_idx.view(-1, 1)).squeeze(1))


@pytest.mark.parametrize("name,params", [
    ("clip-dissect", {"similarity": s}) for s in ("soft_wpmi", "wpmi", "cos", "cos3", "rank_reorder")
] + [("mammi", {}), ("netdissect", {})])
def test_unit_counts_reproduce_the_labels_and_streaming_changes_nothing(name, params):
    method = dk.create("method", name, **params)
    ev = _evidence(n=128, masks=name == "netdissect")
    labels = method.label(ev)
    lab = label_indices(labels, ev.concept_texts)
    ones = method.label_resampled(ev, labels, Resamples.ones(2, ev.n_images))
    assert isinstance(ones, ResampledLabels)
    assert torch.equal(ones.top1, lab.expand(2, -1))
    R = Resamples(5, ev.n_images, seed=9)
    whole = method.label_resampled(ev, labels, R)
    chunks = Evidence(ev.layer, None, ev.image_embeddings, ev.concepts, ev.encode_texts, spatial_maps=ev.spatial_maps,
                      activation_chunks=lambda: iter(ev.activations.split(29)))
    streamed = method.label_resampled(chunks, labels, R)
    assert torch.equal(whole.top1, streamed.top1)
    torch.testing.assert_close(whole.score, streamed.score, equal_nan=True, rtol=1e-5, atol=1e-6)


def test_stability_columns_and_groups():
    top1 = torch.tensor([[0, 1, -1], [0, 2, -1], [1, 2, -1], [0, 2, -1]])
    score = torch.tensor([[1.0, 2.0, math.nan], [2.0, 3.0, math.nan], [3.0, 4.0, math.nan], [4.0, 5.0, math.nan]],
                         dtype=torch.float64)
    cols = stability_columns(ResampledLabels(top1, score), torch.tensor([0, 2, -1]), ["g", "g", "h"], interval=0.5)
    assert cols["stability"] == [0.75, 0.75, None]
    assert cols["stability_group"] == [1.0, 0.75, None]  # concepts 0 and 1 form group g; 2 is h
    assert cols["score_lo"][0] == pytest.approx(1.75) and cols["score_hi"][0] == pytest.approx(3.25)
    assert stability_columns(ResampledLabels(top1, score), torch.tensor([0, 2, -1]))["stability_group"] == [None] * 3


def test_a_method_without_resampling_gets_empty_columns():
    from dissectkit.labelling.columns import LabelContext
    from dissectkit.labelling.evidence import LayerLabels
    from dissectkit.labelling.stability import STABILITY, StabilityParams

    class First:
        name = "first"

        def label(self, evidence):
            return LayerLabels(evidence.layer, self.name, {}, [[(evidence.concept_texts[0], 1.0)]] * 6)

    ev = _evidence()
    m = First()
    ctx = LabelContext("layer", m.label(ev), ev, ev.concept_objects, m)
    assert STABILITY.compute(ctx, StabilityParams()) == {}


def test_quickstart_tables_cards_and_compare_carry_stability(tmp_path):
    import csv

    from dissectkit.host.recipe import recipe_from_dict
    from dissectkit.report.compare import quality_ranking

    recipe = recipe_from_dict({
        "name": "st", "dissector": "synth-clip", "target": {"name": "synth-effnet-concepts", "layers": ["classifier"]},
        "probe": {"name": "synth-mammo", "params": {"n": 120}},
        "concepts": {"name": "synth-mammo-concepts", "params": {"groups": ["findings", "distractors"]}},
        "methods": [{"name": "clip-dissect", "params": {"similarity": "soft_wpmi", "similarity_params": {"top_k": 20}}},
                    {"name": "mammi", "params": {"template": "There is {} in the breast."}}],
        "output": {"dir": str(tmp_path / "run"), "reporters": ["csv", "html"],
                   "columns": {"stability": {"resamples": 8}}},
        "runtime": {"device": "cpu", "batch_size": 60},
    })
    result = dk.run(recipe)
    rows = list(csv.DictReader((tmp_path / "run" / "neurons.csv").open()))
    assert {"stability", "stability_group", "score_lo", "score_hi", "label_supported"} <= set(rows[0])
    values = [float(r["stability"]) for r in rows if r["stability"]]
    assert len(values) == len(rows) and all(0 <= v <= 1 for v in values) and all(v in {i / 8 for i in range(9)} for v in values)
    assert all(r["stability_group"] == "" for r in rows)  # no groups file
    assert all(float(r["score_lo"]) <= float(r["score_hi"]) for r in rows)
    assert "stability " in (tmp_path / "run" / "report.html").read_text()
    ranking = quality_ranking([result])
    assert sorted(r["rank_stability"] for r in ranking) == [1, 2]
    assert all(r["stability"] is not None for r in ranking)
