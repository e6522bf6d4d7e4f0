"""The synthetic mammography generator, probe and concept set."""

from __future__ import annotations

import numpy as np
import pytest

import dissectkit as dk
from dissectkit.base.errors import ComponentError
from dissectkit.synthetic import vocab
from dissectkit.synthetic.generator import SynthMammoGenerator
from dissectkit.synthetic.text import HashTokenizer


def test_same_seed_and_index_give_identical_items():
    a, b = SynthMammoGenerator(seed=3).item(7), SynthMammoGenerator(seed=3).item(7)
    assert a.image.dtype == np.uint8 and a.image.shape == (320, 192)
    assert np.array_equal(a.image, b.image)
    assert a.labels == b.labels and a.report == b.report and a.id == b.id
    assert a.masks.keys() == b.masks.keys()
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
    # order of access does not matter; other indices and seeds differ
    g = SynthMammoGenerator(seed=3)
    g.item(100)
    assert np.array_equal(g.item(7).image, a.image)
    assert not np.array_equal(SynthMammoGenerator(seed=3).item(8).image, a.image)
    assert not np.array_equal(SynthMammoGenerator(seed=4).item(7).image, a.image)


def test_masks_and_labels_agree():
    g = SynthMammoGenerator(seed=0)
    seen = set()
    for i in range(60):
        smp = g.sample(i)
        comp = vocab.COMPOSITIONS[vocab.COMPOSITION_LETTERS.index(smp.labels["composition"])]
        assert smp.labels["density"] == comp and comp in smp.masks
        for f in vocab.FINDINGS:
            has_mask = f in smp.masks
            assert smp.labels[f] == int(has_mask), (i, f)
            if has_mask:
                m = smp.masks[f]
                assert m.dtype == bool and m.shape == smp.image.shape and m.any()
                seen.add(f)
        # a mass has exactly one shape and one margin
        shapes = sum(smp.labels[s] for s in vocab.MASS_SHAPES)
        margins = sum(smp.labels[s] for s in vocab.MASS_MARGINS)
        assert shapes == margins <= 1
        malignant = any(smp.labels[f] for f in vocab.MALIGNANT_FINDINGS)
        assert smp.labels["malignancy_true"] == int(malignant)
        for c in smp.masks:
            assert c in vocab.CONCEPT_CLASSES
    assert len(seen) >= 14  # nearly every finding occurs in 60 images


def test_findings_are_drawn_where_their_masks_are():
    """Bright findings raise the pixels under their masks above the rest of the breast."""
    g = SynthMammoGenerator(seed=1, frequencies={k: 0.0 for k in vocab.DEFAULT_FREQUENCIES} | {"surgical clip": 1.0})
    for i in range(10):
        smp = g.sample(i)
        assert set(smp.masks) - set(vocab.COMPOSITIONS) == {"surgical clip"}
        clip = smp.masks["surgical clip"]
        assert smp.image[clip].max() >= 200 > np.median(smp.image[~clip])


def test_laterality_flips_the_image():
    g = SynthMammoGenerator(seed=0)
    for i in range(20):
        smp = g.sample(i)
        first, last = smp.image[:, :3].mean(), smp.image[:, -3:].mean()
        # the chest wall is on the left for R (the far edge is background), on the right for L
        assert (first > last + 20) == (smp.labels["laterality"] == "R"), i


def test_frequencies_and_label_noise():
    none = SynthMammoGenerator(seed=0, frequencies={k: 0.0 for k in vocab.DEFAULT_FREQUENCIES})
    for i in range(5):
        item = none.item(i)
        assert set(item.masks) <= set(vocab.COMPOSITIONS)
        assert not any(item.labels[f] for f in vocab.FINDINGS)
    always = SynthMammoGenerator(seed=0, frequencies={"mass": 1.0}, label_noise=0.0)
    for i in range(5):
        lab = always.item(i).labels
        assert sum(lab[s] for s in vocab.MASS_SHAPES) == 1
        assert lab["malignancy"] == lab["malignancy_true"]
    noisy = SynthMammoGenerator(seed=0, label_noise=0.5)
    flips = sum(noisy.sample(i).labels["malignancy"] != noisy.sample(i).labels["malignancy_true"] for i in range(80))
    assert 20 < flips < 60
    with pytest.raises(ValueError, match="Did you mean 'surgical clip'"):
        SynthMammoGenerator(frequencies={"surgical clips": 0.5})


def test_reports_name_every_finding():
    g = SynthMammoGenerator(seed=2)
    for i in range(40):
        item = g.item(i)
        text = item.report.lower()
        for f in vocab.CONCEPT_CLASSES:
            mentioned = any(s in text for s in vocab.SYNONYMS[f])
            if item.labels.get(f) or item.labels["density"] == f:
                assert mentioned, (f, item.report)
        side = "left" if item.labels["laterality"] == "L" else "right"
        if any(item.labels[f] for f in vocab.FINDINGS):
            assert side in text


def test_probe_component():
    probe = dk.create("probe", "synth-mammo", n=12, seed=5, height=160, width=96)
    assert len(probe) == 12 and {s.name: s for s in dk.list_components("probe")}["synth-mammo"].has_masks is True
    item = probe[3]
    assert item.image.shape == (160, 96) and item.id == probe.ids()[3]
    assert probe.fingerprint() == dk.create("probe", "synth-mammo", n=12, seed=5, height=160, width=96).fingerprint()
    assert probe.fingerprint() != dk.create("probe", "synth-mammo", n=12, seed=6, height=160, width=96).fingerprint()
    with pytest.raises(IndexError):
        probe[12]
    with pytest.raises(ComponentError, match="frequencies"):
        dk.create("probe", "synth-mammo", frequencies={"masss": 0.2})


def test_concept_set():
    cs = dk.create("concepts", "synth-mammo-concepts")
    texts = [c.text for c in cs.concepts]
    assert len(texts) == len({t.lower() for t in texts})
    for c in vocab.CONCEPT_CLASSES:
        assert c in texts
    cats = {c.category for c in cs.concepts}
    assert {"mass", "calcification", "breast composition", "distractor"} <= cats
    assert "rounded mass" in texts and "dog" in texts
    only = dk.create("concepts", "synth-mammo-concepts", groups=["findings"])
    assert [c.text for c in only.concepts] == list(vocab.CONCEPT_CLASSES)
    with pytest.raises(ComponentError, match="distractors"):
        dk.create("concepts", "synth-mammo-concepts", groups=["distractor"])


def test_tokenizer_handles_any_text():
    tok = HashTokenizer(buckets=64)
    for text in ["", "   ", "round mass", "Zygomorphic ünïcödé ☃ 12345", "x" * 500]:
        feats = tok.features(text)
        assert feats and all(0 <= f < 64 for f in feats)
    assert tok.features("Round  MASS!") == tok.features("round mass")
    ids, offsets = tok.batch(["a", "", "b c"])
    assert offsets.tolist()[0] == 0 and len(offsets) == 3 and len(ids) > 3
