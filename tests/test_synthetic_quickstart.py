"""End to end: the quickstart recipe at a reduced size, and the synthetic benchmark's scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

import dissectkit as dk
from dissectkit.synthetic import vocab

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
TOP1_FLOOR = 0.5  # at 300 images (top_k=100 is a third of the probe); the full-size bar is tested below


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    recipe = dk.load_recipe(RECIPE, overrides=[
        "probe.params.n=300", f"output.dir={out}", f"runtime.cache_dir={out / 'cache'}", "runtime.device=cpu",
    ])
    return dk.run(recipe)


@pytest.mark.slow
def test_quickstart_labels_the_output_layer(quick_run):
    (ls,) = quick_run.label_sets
    assert ls.dissector == "synth-clip" and ls.target == "synth-effnet-concepts" and ls.method == "clip-dissect"
    assert set(ls.layers) == {"blocks.1", "blocks.5", "classifier"}
    out = ls.layers["classifier"]
    assert len(out) == len(vocab.CONCEPT_CLASSES)
    acc = quick_run.measures[ls.key]["classifier"]
    assert acc["n"] == 20
    assert acc["top5"] >= acc["top1"] >= TOP1_FLOOR, list(zip(out.top1(), vocab.CONCEPT_CLASSES, strict=True))
    # composition neurons are the committed models' strongest
    assert sum(t == c for t, c in zip(out.top1(), vocab.CONCEPT_CLASSES, strict=True) if c in vocab.COMPOSITIONS) >= 3
    assert (quick_run.out_dir / "labels.json").exists()


@pytest.mark.slow
def test_benchmark_scoring_on_the_run(quick_run):
    from dissectkit.synthetic.bench import lexical_embed, score, to_markdown

    figures = score(quick_run, n=300)
    (row,) = figures["output_layer"]
    assert row["top1"] == quick_run.measures["synth-clip/synth-effnet-concepts/clip-dissect"]["classifier"]["top1"]
    assert row["hit_rate"] >= row["top1"] and 0 <= row["precision"] <= 1
    assert 0 < row["cos_independent"] <= 1
    aucs = figures["zero_shot_auc"]["synth-clip"]
    assert set(aucs) == set(vocab.CONCEPT_CLASSES)
    assert all(aucs[c] > 0.95 for c in vocab.COMPOSITIONS)
    md = to_markdown({"n_images": 300, "seed": 0, **figures})
    assert "Zero-shot AUC of synth-clip" in md
    # the independent text space is lexical: identical texts score 1, unrelated ones near 0
    e = lexical_embed(["round mass", "round mass", "dog"])
    assert float(e[0] @ e[1]) == pytest.approx(1.0) and float(e[0] @ e[2]) < 0.2


@pytest.mark.slow
def test_quickstart_acceptance_bar(tmp_path):
    """The recipe as shipped (1,000 images): clip-dissect soft-WPMI with synth-clip names at least 80%
    of the output layer's neurons exactly right at top-1 (the issue's acceptance bar)."""
    recipe = dk.load_recipe(RECIPE, overrides=[f"output.dir={tmp_path}", "output.reporters=[json]",
                                               f"runtime.cache_dir={tmp_path / 'cache'}", "runtime.device=cpu"])
    result = dk.run(recipe)
    (ls,) = result.label_sets
    acc = result.measures[ls.key]["classifier"]
    assert acc["n"] == 20 and acc["top1"] >= 0.8, list(zip(ls.layers["classifier"].top1(), vocab.CONCEPT_CLASSES, strict=True))
    assert acc["top5"] >= acc["top1"]
