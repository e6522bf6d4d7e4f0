"""The published evaluation metrics (dissectkit.labelling.evaluation, ``dissectkit evaluate``): checked
against direct computations with tiny local CLIP (open_clip) and sentence-transformers (MPNet-style)
models built here, and MAMMI's list measures on hand-made lists."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import torch

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DataError
from dissectkit.labelling.evaluation import evaluate_layer, read_truth, sentence_encoder
from dissectkit.labelling.evidence import LayerLabels

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
WORDS = ["a", "of", "the", "mass", "round", "oval", "irregular", "margin", "spiculated", "circumscribed", "calcifications", "fine", "pleomorphic", "linear", "branching", "coarse", "popcorn", "vascular", "architectural", "distortion", "focal", "asymmetry", "skin", "thickening", "nipple", "retraction", "intramammary", "lymph", "node", "surgical", "clip", "breast", "implant", "almost", "entirely", "fatty", "scattered", "fibroglandular", "density", "heterogeneously", "extremely", "dense", "dog", "cat"]


@pytest.fixture(scope="module")
def tiny_sentence_model(tmp_path_factory) -> Path:
    """A sentence-transformers folder: a tiny random BERT, mean pooling, normalisation (the layout of
    all-mpnet-base-v2), with a word-level tokenizer."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as stm
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("st")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    wl = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=wl, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))
    bert.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    st = SentenceTransformer(modules=[stm.Transformer(str(root / "hf"), max_seq_length=32), stm.Pooling(16, "mean"),
                                      stm.Normalize()])
    st.save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="module")
def encoders(tiny_openclip_dir, tiny_sentence_model):
    clip = dk.create("dissector", "open-clip", _ctx=BuildContext(device="cpu", offline=True),
                     pretrained=f"local-dir:{tiny_openclip_dir}")
    return {"clip": clip.encode_texts, "mpnet": sentence_encoder(tiny_sentence_model)}


def test_clip_and_mpnet_cosines_equal_a_direct_computation(encoders, tiny_sentence_model):
    from sentence_transformers import SentenceTransformer

    ll = LayerLabels("out", "clip-dissect", {}, [[("round mass", 2.0), ("dog", 1.0)], [("cat", 1.0), ("oval mass", 0.5)],
                                                 []])
    truth = {0: ["round mass"], 1: ["oval mass"], 2: ["spiculated margin"]}
    got = evaluate_layer(ll, truth, encoders)
    clip_pred = encoders["clip"](["round mass", "cat"]).double()
    clip_true = encoders["clip"](["round mass", "oval mass"]).double()
    cos = torch.nn.functional.cosine_similarity(clip_pred, clip_true, dim=1).tolist()
    assert got["clip_cos"] == pytest.approx((cos[0] + cos[1] + 0.0) / 3, abs=1e-6)  # no label: 0
    st = SentenceTransformer(str(tiny_sentence_model), device="cpu")  # as the published code calls it
    e = st.encode(["round mass", "cat", "round mass", "oval mass"])
    direct = (float(e[0] @ e[2]) + float(e[1] @ e[3]) + 0.0) / 3
    assert got["mpnet_cos"] == pytest.approx(direct, abs=1e-6)
    assert (got["top1"], got["top5"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert (got["rank_mean"], got["rank_median"], got["rank_n"]) == (1.5, 1.5, 2)  # the third: unknown
    # MAMMI's pairwise cosine: every (predicted, true) pair, lower-cased, "none" for no concept
    pairs = [(["round mass", "dog"], ["round mass"]), (["cat", "oval mass"], ["oval mass"]), (["none"], ["spiculated margin"])]
    per = []
    for p, t in pairs:
        ep, et = encoders["clip"](p).double(), encoders["clip"](t).double()
        per.append(float(torch.nn.functional.cosine_similarity(ep[:, None], et[None], dim=-1).clamp(max=1).mean()))
    assert got["clip_pair_cos"] == pytest.approx(statistics.fmean(per), abs=1e-6)
    assert got["clip_pair_cos_se"] == pytest.approx(statistics.pstdev(per) / math.sqrt(3), abs=1e-6)
    mp = [float((st.encode(p) @ st.encode(t).T).mean()) for p, t in pairs]
    assert got["mpnet_pair_cos"] == pytest.approx(statistics.fmean(mp), abs=1e-6)


def test_mammi_list_measures_as_published():
    """Lower-cased lists, "none" for no concept, precision over the list's length, ddof 0."""
    ll = LayerLabels("out", "mammi", {}, [[("Mass", 1.0), ("Nodule", 0.9)], [("effusion", 1.0)], []])
    truth = {0: ["mass"], 1: ["Edema", "Effusion"], 2: ["hernia"]}
    got = evaluate_layer(ll, truth)
    hit, prec, rec = [1.0, 1.0, 0.0], [0.5, 1.0, 0.0], [1.0, 0.5, 0.0]
    f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(prec, rec, strict=True)]
    for name, values in (("hit_rate", hit), ("precision", prec), ("recall", rec), ("f1", f1)):
        assert got[name] == pytest.approx(statistics.fmean(values))
        assert got[f"{name}_se"] == pytest.approx(statistics.pstdev(values) / math.sqrt(3))  # ddof = 0
    assert "clip_cos" not in got and got["n"] == 3
    capped = evaluate_layer(LayerLabels("o", "m", {}, [[("x", 1.0), ("mass", 0.5)]]), {0: ["mass"]}, list_top=1)
    assert capped["hit_rate"] == 0.0


def test_truth_files_are_read_with_clear_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("layer,unit,label,target\nclassifier,0,round mass|oval mass,\nclassifier,1,dog,m\n")
    truth = read_truth(path)
    assert truth.of("m", "classifier") == {0: ["round mass", "oval mass"], 1: ["dog"]}
    assert truth.of("other", "classifier") == {0: ["round mass", "oval mass"]}
    path.write_text("layer,neuron,label\nx,0,a\n")
    with pytest.raises(DataError, match="columns layer, unit and label"):
        read_truth(path)
    path.write_text("layer,unit,label\nx,zero,a\n")
    with pytest.raises(DataError, match="row 2: unit 'zero'"):
        read_truth(path)
    with pytest.raises(DataError, match="unit 5 of layer 'out'"):
        evaluate_layer(LayerLabels("out", "m", {}, [[("a", 1.0)]]), {5: ["a"]})


@pytest.mark.slow
def test_evaluate_command_prints_every_metric(tmp_path, tiny_openclip_dir, tiny_sentence_model):
    """`dissectkit evaluate` on a quickstart run (reduced): every metric printed, evaluation.csv written,
    the report's evaluation section filled, the truth's rank exact after re-scoring from the cache."""
    from typer.testing import CliRunner

    from dissectkit.cli.app import app
    from dissectkit.synthetic import vocab

    out = tmp_path / "run"
    recipe = dk.load_recipe(RECIPES / "quickstart.yaml", overrides=[
        "probe.params.n=120", f"output.dir={out}", f"runtime.cache_dir={tmp_path / 'cache'}", "runtime.device=cpu",
        "target.layers=[blocks.5, classifier]", "output.reporters=[json, {name: html, params: {top_images: 0}}]"])
    result = dk.run(recipe)
    truth = tmp_path / "truth.csv"
    with truth.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["layer", "unit", "label"])
        w.writerows(["classifier", k, c] for k, c in enumerate(vocab.CONCEPT_CLASSES))
    res = CliRunner().invoke(app, [
        "evaluate", str(out), "--truth", str(truth), "--clip", f'open-clip:{{"pretrained": "local-dir:{tiny_openclip_dir}"}}',
        "--mpnet", str(tiny_sentence_model), "--medclip", "synth-clip"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    from dissectkit.labelling.evaluation import COLUMNS

    for metric in COLUMNS[4:]:
        assert metric in res.output, metric
    with (out / "evaluation.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["layer"] == "classifier" and int(row["n"]) == 20 and int(row["rank_n"]) == 20
    ll = result.label_sets[0].layers["classifier"]
    assert float(row["top1"]) == pytest.approx(result.measures[result.label_sets[0].key]["classifier"]["top1"])
    assert all(float(row[c]) == float(row[c]) for c in COLUMNS[4:])  # every metric computed (no NaN, no blank)
    assert len(ll.neurons[0]) == 5  # the run keeps its top 5; the ranks came from re-scoring every concept
    html = (out / "report.html").read_text()
    assert html.count("<!-- dissectkit:evaluation -->") == 1 and "Evaluation against the ground truth" in html
    from dissectkit.results.run_result import RunResult

    assert RunResult.load(out).label_sets[0].layers["classifier"].neurons == ll.neurons  # the run is unchanged


def test_missing_sentence_transformers_names_the_mpnet_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import -> ImportError
    with pytest.raises(DataError, match=r"pip install 'dissectkit\[mpnet\]'"):
        sentence_encoder(tmp_path)
    monkeypatch.undo()
    with pytest.raises(DataError, match="Cannot load the sentence-transformers model .* offline"):
        sentence_encoder(tmp_path / "missing")
