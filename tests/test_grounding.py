"""Grounding columns (dissectkit.labelling.grounding) and the mammo-factor method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dissectkit.labelling.evidence import Evidence, SpatialBatch

H, W = 32, 16  # mask size; maps are 8 x 4


def _world(n: int = 40, seed: int = 0):
    """Images with one square of class 'mass' or 'calc' (alternating) at a random place; channel 0
    fires on the mass, channel 1 on the calcification, channel 2 everywhere (no concept)."""
    gen = np.random.default_rng(seed)
    maps = np.zeros((n, 3, 8, 4), dtype=np.float32)
    masks: list[dict[str, np.ndarray]] = []
    for i in range(n):
        cls = "mass" if i % 2 == 0 else "calc"
        y, x = int(gen.integers(0, 7)), int(gen.integers(0, 3))
        m = np.zeros((H, W), dtype=bool)
        m[y * 4 : y * 4 + 8, x * 4 : x * 4 + 8] = True
        masks.append({cls: m})
        maps[i, 0 if cls == "mass" else 1, y : y + 2, x : x + 2] = 1.0 + gen.random()
        maps[i, 2] = 0.5 + 0.1 * gen.random((8, 4))
    acts = torch.from_numpy(maps.mean((2, 3)))
    t = torch.tensor(maps)

    def spatial():
        for s in range(0, n, 16):
            yield SpatialBatch(maps=t[s : s + 16], masks=masks[s : s + 16])

    return acts, spatial


def _evidence(acts, spatial, concepts=("mass", "calc", "skin")):
    gen = torch.Generator().manual_seed(1)
    table = torch.nn.functional.normalize(torch.randn(16, 8, generator=gen), dim=1)

    def encode(texts):
        return torch.stack([table[sum(map(ord, t)) % 16] for t in texts])

    return Evidence(layer="L", activations=acts, image_embeddings=torch.zeros(acts.shape[0], 8),
                    concepts=list(concepts), encode_texts=encode, spatial_maps=spatial)


def test_grounding_scores_right_labels_above_wrong_ones_and_leaves_unmasked_concepts_empty():
    from dissectkit.labelling.grounding import layer_grounding

    acts, spatial = _world()
    ev = _evidence(acts, spatial)
    right = layer_grounding(ev, ["mass", "calc", None], [], _params(quantile=0.1))
    wrong = layer_grounding(ev, ["calc", "mass", "mass"], [], _params(quantile=0.1))
    assert right["grounding_iou"][0] > 0.3 and right["pointing"][0] == 1.0 and right["pointing"][1] == 1.0
    assert wrong["grounding_iou"][0] < right["grounding_iou"][0] and wrong["pointing"][0] == 0.0
    assert right["grounding_iou"][2] is None and right["grounding_note"][2] is None  # unlabelled: no note
    empty = layer_grounding(ev, ["skin", "mass", None], [])
    assert empty["grounding_iou"][0] is None and empty["pointing"][0] is None  # empty, not zero
    assert "no masks of 'skin'" in empty["grounding_note"][0]
    mapped = layer_grounding(ev, ["lesion", None, None], [], _params(mask_classes={"lesion": ["mass", "calc"]}))
    assert mapped["grounding_iou"][0] is not None


def _params(**kw):
    from dissectkit.labelling.grounding import GroundingParams

    return GroundingParams(**kw)


def test_grounding_without_masks_or_extent_says_why():
    from dissectkit.labelling.grounding import NO_EXTENT, NO_MASKS, layer_grounding

    acts, spatial = _world()
    out = layer_grounding(_evidence(acts, None), ["mass", None, None], [])
    assert out["grounding_iou"] == [None] * 3 and out["grounding_note"][0] == NO_MASKS

    def flat():
        for b in spatial():
            yield SpatialBatch(maps=b.maps.mean((2, 3), keepdim=True), masks=b.masks)

    out = layer_grounding(_evidence(acts, flat), ["mass", None, None], [])
    assert out["grounding_iou"][0] is None and out["grounding_note"][0] == NO_EXTENT


def test_mask_classes_for_matches_text_then_mapping():
    from dissectkit.base.types import Concept
    from dissectkit.labelling.grounding import mask_classes_for

    assert mask_classes_for("Mass", ["mass", "calc"]) == ["mass"]
    assert mask_classes_for("spiculated mass", ["mass"]) == []
    c = Concept(text="spiculated mass", category="finding", subcategory="masses")
    assert mask_classes_for(c, ["Mass"], {"masses": "mass"}) == ["Mass"]


def _factor(**kw):
    from dissectkit.builtin.methods.factor import FactorParams, MammoFactor

    return MammoFactor(FactorParams(**{"epochs": 3, "cache": False, "heatmap_images": 2, "heatmap_channels": 1, **kw}), None)


def test_mammo_factor_finds_the_attribute_channels_deterministically_with_heatmaps():
    acts, spatial = _world()
    ev = _evidence(acts, spatial, ["mass", "calc"])
    a = _factor().label(ev)
    b = _factor().label(ev)
    assert a.to_dict() == b.to_dict()
    assert a.top1()[:2] == ["mass", "calc"]
    views = {v["attribute"]: v for v in a.extra["attributes"]}
    assert views["mass"]["channels"][0][0] == 0 and views["calc"]["channels"][0][0] == 1
    img = views["mass"]["images"][0]
    assert np.asarray(img["heatmap"]).shape == (8, 4) and img["present"] and img["pointing"] is True
    assert len(a.extra["loss"]) == 3


def test_mammo_factor_needs_masks_and_named_attributes():
    from dissectkit.base.errors import EvidenceError

    acts, spatial = _world()
    with pytest.raises(EvidenceError, match="no masks"):
        _factor().label(_evidence(acts, None, ["mass"]))
    with pytest.raises(EvidenceError, match="mask_classes"):
        _factor().label(_evidence(acts, spatial, ["skin"]))
    with pytest.raises(ValueError, match="placeholder"):
        _factor(prompts=["a photo"])


@pytest.mark.slow
def test_synthetic_world_planted_channels_and_grounding(tmp_path):
    # the truth test on synth-effnet-planted's final conv layer: mammo-factor recovers the planted
    # channels, and clip-dissect's right labels are better grounded than its wrong ones (the labels
    # of the random channels among them); benchmarks/grounding.py gives every method's AUC
    import dissectkit as dk
    from dissectkit.host.recipe import load_recipe, recipe_from_dict
    from dissectkit.synthetic import arch
    from dissectkit.synthetic.plugin import _config_of

    data = load_recipe("recipes/factor_synthetic.yaml").model_dump(exclude_none=True)
    data.pop("method", None)
    data["methods"] = [{"name": "mammo-factor"}, {"name": "clip-dissect"}]
    data["probe"]["params"]["n"] = 400
    data["output"] = {"dir": str(tmp_path), "reporters": ["csv"]}
    data["runtime"]["device"] = "cpu"
    result = dk.run(recipe_from_dict(data))
    assert result.measures["synth-clip/synth-effnet-planted/mammo-factor"]["planted"]["top1"] >= 0.8
    classes = arch.target_classes("synth-effnet-concepts", _config_of(None, None))
    assert classes is not None
    rows = [r for r in result.rows() if r["method"] == "clip-dissect" and r["label"]]
    right = [r["grounding_iou"] for r in rows if r["unit"] < len(classes) and r["label"] == classes[r["unit"]]]
    wrong = [r["grounding_iou"] for r in rows if r["unit"] >= len(classes) or r["label"] != classes[r["unit"]]]
    assert right and wrong and np.mean(right) > np.mean(wrong)
    assert all(r["grounding_iou"] is not None and r["pointing_above_chance"] is not None for r in result.rows() if r["label"])
    for method in ("clip-dissect", "mammo-factor"):  # corrected for chance, the right labels still point better
        rows = [r for r in result.rows() if r["method"] == method and r["label"]]
        right = [r["pointing_above_chance"] for r in rows if r["unit"] < len(classes) and r["label"] == classes[r["unit"]]]
        wrong = [r["pointing_above_chance"] for r in rows if r["unit"] >= len(classes) or r["label"] != classes[r["unit"]]]
        assert np.mean(right) > np.mean(wrong), method


def test_thresholds_from_a_sample_of_the_annotated_images_are_those_of_that_sample():
    """``threshold_images`` bounds the thresholds' cost: with 40 annotated images and a bound of 10,
    every 4th image is read, and the thresholds equal Network Dissection's on those images alone."""
    from dissectkit.labelling.grounding import _thresholds, mask_index
    from dissectkit.labelling.spatial_grid import QuantileGrid

    acts, spatial = _world(40)
    ev = _evidence(acts, spatial)
    index = mask_index(ev, _params())
    sampled = _thresholds(ev, _params(quantile=0.05, threshold_images=10), index, "cpu")
    every = _thresholds(ev, _params(quantile=0.05, threshold_images=None), index, "cpu")
    batches = list(spatial())
    maps = torch.cat([b.maps for b in batches])[::4]
    masks = [m for b in batches for m in b.masks][::4]

    def fourth():
        yield SpatialBatch(maps=maps, masks=masks)

    alone = QuantileGrid(_params(quantile=0.05)).layer_thresholds(_evidence(acts[::4], fourth))[0]
    assert torch.equal(sampled, alone) and not torch.equal(sampled, every)


def test_grounding_above_chance_discounts_where_the_concept_usually_is():
    """A channel firing everywhere overlaps every mask a little: its IoU is above zero, but not above
    what the label's masks placed as in a random image give; the right labels are well above chance."""
    from dissectkit.labelling.grounding import layer_grounding

    acts, spatial = _world()
    out = layer_grounding(_evidence(acts, spatial), ["mass", "calc", "mass"], [], _params(quantile=0.1))
    assert out["grounding_iou"][2] > 0.05 and abs(out["grounding_above_chance"][2]) < 0.06
    assert out["grounding_above_chance"][0] > 0.5 and out["pointing_above_chance"][0] > 0.8
    wrong = layer_grounding(_evidence(acts, spatial), ["calc", "mass", None], [], _params(quantile=0.1))
    assert wrong["grounding_above_chance"][0] < 0 and wrong["pointing_above_chance"][0] < 0


def test_pointing_tolerance_is_the_maps_own_cell():
    """A finding smaller than a cell of the map, near the cell's corner: the map cannot point finer
    than its cell, so the default tolerance (half a cell around the peak) counts a hit; 0 does not."""
    from dissectkit.labelling.grounding import layer_grounding

    n = 8
    maps = np.zeros((n, 1, 8, 4), dtype=np.float32)
    masks = []
    for i in range(n):
        y, x = 1 + i % 6, i % 4
        maps[i, 0, y, x] = 1.0 + 0.01 * i
        dot = np.zeros((H, W), dtype=bool)
        dot[y * 4, x * 4] = True  # the cell's corner pixel
        masks.append({"dot": dot})
    t = torch.tensor(maps)

    def spatial():
        yield SpatialBatch(maps=t, masks=masks)

    ev = _evidence(torch.from_numpy(maps.mean((2, 3))), spatial, ["dot"])
    assert layer_grounding(ev, ["dot"], [], _params(quantile=0.05))["pointing"] == [1.0]
    assert layer_grounding(ev, ["dot"], [], _params(quantile=0.05, pointing_tolerance=0))["pointing"] == [0.0]


def test_a_cached_run_reads_the_mask_index_and_only_the_top_images_maps(tmp_path, monkeypatch):
    """The engine's spatial source: ``maps_at`` gives the stream's maps, ``packed_rows`` its masks as
    stored; a second run reads the mask index, the thresholds and the chance maps from the cache
    (no mask unpacked, no full pass over the maps) and gets the same columns."""
    import dissectkit as dk
    from dissectkit.engine import spatial as engine_spatial
    from dissectkit.labelling import grounding

    overrides = ["probe.params.n=120", "runtime.batch_size=32", "runtime.chunk_images=50", "output.reporters=[csv]",
                 f"runtime.cache_dir={tmp_path / 'cache'}"]
    sources = []
    original = grounding.layer_grounding

    def spy(evidence, *a, **k):
        sources.append(evidence.spatial_maps)
        return original(evidence, *a, **k)

    monkeypatch.setattr(grounding, "layer_grounding", spy)
    first = dk.run(dk.load_recipe("recipes/quickstart.yaml", [*overrides, f"output.dir={tmp_path / 'a'}"]))
    source = next(s for s in sources if s is not None and s.map_size != (1, 1))
    streamed = [(b.maps, m) for b in source() for m in [b.masks]]
    maps = torch.cat([m for m, _ in streamed])
    assert torch.equal(source.maps_at([0, 7, 119]), maps[[0, 7, 119]])
    packed = list(source.packed_rows())
    unpacked = [m for _, ms in streamed for m in ms]
    assert len(packed) == len(unpacked) == 120
    for row, masks in zip(packed, unpacked, strict=True):
        assert bool(row) == bool(masks)
        for c, h, w, bits in row or ():
            assert np.array_equal(np.unpackbits(bits, count=h * w).reshape(h, w).astype(bool), masks[c])

    grounding._MEMO.clear()

    def no_unpack(*_a, **_k):
        raise AssertionError("a cached run unpacked the masks")

    monkeypatch.setattr(engine_spatial, "packed_masks", no_unpack)
    monkeypatch.setattr(engine_spatial.SpatialSource, "__call__", no_unpack)
    second = dk.run(dk.load_recipe("recipes/quickstart.yaml", [*overrides, f"output.dir={tmp_path / 'b'}"]))
    columns = ("grounding_iou", "grounding_above_chance", "pointing", "pointing_above_chance", "grounding_note")
    assert [[r[c] for c in columns] for r in first.rows()] == [[r[c] for c in columns] for r in second.rows()]
    assert any(r["pointing_above_chance"] is not None for r in second.rows())


def test_derived_files_carry_a_checksum_and_a_damaged_one_is_moved_aside_and_computed_again(tmp_path, caplog):
    """What grounding keeps in the cache (mask index, thresholds, chance maps) is verified like the
    chunks: a flipped byte is found by ``cache verify`` and, in a run, moved aside and computed again."""
    import dissectkit as dk
    from dissectkit.engine.cache import Cache
    from dissectkit.labelling import grounding

    cache = tmp_path / "cache"
    overrides = ["probe.params.n=120", "runtime.batch_size=32", "runtime.chunk_images=50", "output.reporters=[csv]",
                 f"runtime.cache_dir={cache}"]
    grounding._MEMO.clear()  # content keys do not name the cache folder: start from this cache alone
    first = dk.run(dk.load_recipe("recipes/quickstart.yaml", [*overrides, f"output.dir={tmp_path / 'a'}"]))
    derived = sorted(cache.glob("*/*/derived/*.safetensors"))
    assert {p.name.split("-")[0] for p in derived} >= {"masks", "thresholds", "grounding"}
    assert Cache(cache).verify()[1] == []
    index = next(p for p in derived if p.name.startswith("masks-index"))
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF
    index.write_bytes(bytes(data))
    problems = Cache(cache).verify()[1]
    assert [(p.path, p.problem) for p in problems] == [(index, "checksum mismatch (its bytes changed after dissectkit wrote it)")]
    grounding._MEMO.clear()
    second = dk.run(dk.load_recipe("recipes/quickstart.yaml", [*overrides, f"output.dir={tmp_path / 'b'}"]))
    assert "masks-index" in caplog.text and "moved aside" in caplog.text
    assert list((cache / "quarantine" / "masks").glob("*/derived/masks-index-*"))
    assert index.is_file() and Cache(cache).verify()[1] == []  # computed again, with its checksum
    columns = ("grounding_iou", "grounding_above_chance", "pointing", "pointing_above_chance")
    assert [[r[c] for c in columns] for r in first.rows()] == [[r[c] for c in columns] for r in second.rows()]
