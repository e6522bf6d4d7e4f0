"""The clip-dissect, mammi and netdissect methods on hand-made evidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.errors import ComponentError, EvidenceError
from dissectkit.labelling.evidence import Evidence, LayerLabels, SpatialBatch

CONCEPTS = ["mass", "calcification", "architectural distortion", "asymmetry", "skin thickening", "lymph node"]


class TextTable:
    """A text encoder over a fixed random table (each distinct string its own unit vector)."""

    def __init__(self, dim=12, seed=0):
        self.g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.table: dict[str, torch.Tensor] = {}
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        for t in texts:
            if t not in self.table:
                self.table[t] = torch.nn.functional.normalize(torch.randn(self.dim, generator=self.g), dim=0)
        return torch.stack([self.table[t] for t in texts])


def _evidence(N=220, K=7, D=12, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    enc = kw.pop("encode_texts", None) or TextTable(D, seed)
    V = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=1)
    A = torch.randn(N, K, generator=g).relu_()
    return Evidence(
        layer="blocks.3", activations=A, image_embeddings=V, concepts=CONCEPTS, encode_texts=enc, **kw
    )


# ---------------------------------------------------------------------------------------------
def test_clip_dissect_equals_its_similarity():
    ev = _evidence()
    method = dk.create("method", "clip-dissect", top_m=3)
    out = method.label(ev)
    assert isinstance(out, LayerLabels) and out.method == "clip-dissect" and len(out) == 7
    assert out.params["similarity"] == "soft_wpmi" and out.params["top_m"] == 3
    assert ev.encode_texts.calls[-1] == CONCEPTS  # bare concepts, no template
    T = ev.encode_texts(CONCEPTS)
    S = dk.create("similarity", "soft_wpmi")(ev.image_embeddings @ T.T, ev.activations)
    for k, ranked in enumerate(out.neurons):
        best = torch.argsort(S[k], descending=True)[:3].tolist()
        assert [c for c, _ in ranked] == [CONCEPTS[j] for j in best]
        assert [s for _, s in ranked] == pytest.approx(S[k, best].tolist(), rel=1e-5, abs=1e-6)


def test_clip_dissect_template_and_similarity_params():
    ev = _evidence()
    method = dk.create(
        "method", "clip-dissect", similarity="wpmi", similarity_params={"top_k": 10}, template="a photo of {}"
    )
    out = method.label(ev)
    assert ev.encode_texts.calls[-1] == [f"a photo of {c}" for c in CONCEPTS]
    assert out.params["similarity_params"] == {"top_k": 10}
    assert all(len(r) == 5 for r in out.neurons)
    with pytest.raises(ComponentError, match="top_kk"):
        dk.create("method", "clip-dissect", similarity="wpmi", similarity_params={"top_kk": 3})
    with pytest.raises(ComponentError, match="soft_wpmi"):
        dk.create("method", "clip-dissect", similarity="soft_wmpi")


def test_clip_dissect_errors_name_layer_and_neuron():
    ev = _evidence()
    ev.activations[4, 5] = float("inf")
    with pytest.raises(EvidenceError, match=r"blocks\.3.*neuron 5"):
        dk.create("method", "clip-dissect").label(ev)
    ev = _evidence(N=50)
    with pytest.raises(EvidenceError, match="at least 100 probe images"):
        dk.create("method", "clip-dissect").label(ev)
    ev = _evidence()
    ev.image_embeddings[3, 0] = float("nan")
    with pytest.raises(EvidenceError, match="Image embeddings"):
        dk.create("method", "mammi").label(ev)


# ---------------------------------------------------------------------------------------------
def ref_mammi(A, V, enc, concepts, p=93.0, beta=0.95, tpl="A chest x-ray image of a {}"):
    """MAMMI per neuron, from docs/methods.md."""
    t = {c: enc([tpl.format(c)])[0].double().numpy() for c in concepts}
    t0 = enc([tpl.format("").strip()])[0].double().numpy()

    def cos(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    out = []
    for k in range(A.shape[1]):
        a = A[:, k]
        lo, hi = a.min(), a.max()
        tau = hi - (hi - lo) * (1 - p / 100)
        R = [i for i in range(len(a)) if a[i] > tau]
        S = {c: sum(cos(V[i], t[c]) - cos(V[i], t0) for i in R) for c in concepts}
        best = max(S.values())
        if best <= 0:
            out.append([])
            continue
        keep = sorted((c for c in concepts if S[c] > beta * best), key=lambda c: -S[c])
        out.append([(c, S[c]) for c in keep])
    return out


@pytest.mark.parametrize(
    "params", [{}, {"percentile": 80.0, "beta": 0.7, "template": "A mammogram showing {}"}]
)
def test_mammi_matches_reference(params):
    ev = _evidence(K=9, seed=3)
    ev.activations[:, 4] = 2.5  # dead neuron -> no concept
    out = dk.create("method", "mammi", **params).label(ev)
    ref_kw = {"p": params.get("percentile", 93.0), "beta": params.get("beta", 0.95)}
    if "template" in params:
        ref_kw["tpl"] = params["template"]
    ref = ref_mammi(
        ev.activations.double().numpy(),
        ev.image_embeddings.double().numpy(),
        ev.encode_texts,
        CONCEPTS,
        **ref_kw,
    )
    assert out.neurons[4] == [] and out.label(4) is None
    scale = max(abs(s) for r in ref for _, s in r)
    for got, want in zip(out.neurons, ref, strict=True):
        assert [c for c, _ in got] == [c for c, _ in want]
        for (_, s), (_, w) in zip(got, want, strict=True):
            assert abs(s - w) <= 1e-4 * scale
    if params:  # with a lower beta several concepts per neuron are normal
        assert any(len(r) > 1 for r in out.neurons)


def test_mammi_adaptive_set_and_negative_scores():
    # neuron 0 fires on 3 images only: its set has exactly those 3 images (no padding to a top-k)
    N, D = 40, 4
    V = torch.eye(D)[torch.arange(N) % D]
    A = torch.zeros(N, 2)
    A[[0, 4, 8], 0] = torch.tensor([5.0, 4.7, 4.9])  # > tau = 5 - 5 * 0.07; embeddings e0
    A[:, 1] = torch.arange(N, dtype=torch.float32)
    table = {
        "A chest x-ray image of a": torch.tensor([0.0, 0.0, 0.0, 1.0]),
        "A chest x-ray image of a x": torch.tensor([1.0, 0.0, 0.0, 0.0]),
        "A chest x-ray image of a y": torch.nn.functional.normalize(
            torch.tensor([1.0, 1.0, 0.0, 0.0]), dim=0
        ),
        "A chest x-ray image of a z": torch.tensor([0.0, 0.0, 1.0, 0.0]),
    }
    ev = Evidence("fc", A, V, ["x", "y", "z"], lambda ts: torch.stack([table[t] for t in ts]))
    out = dk.create("method", "mammi").label(ev)
    assert out.neurons[0] == [("x", pytest.approx(3.0))]  # y scores 3/sqrt(2) < 0.95 * 3
    # neuron 1: R = images with a > 39 - 39 * 0.07 = 36.27 -> 37, 38, 39 (embeddings e1, e2, e3)
    # x: 0 - 1 (e3 image) = -1; y: 1/sqrt2 - 1 ~ -0.29; z: 1 - 1 = 0 -> max 0 <= 0 -> no concept
    assert out.neurons[1] == []


def test_mammi_switch_is_one_line():
    ev = _evidence()
    a = dk.create("method", "clip-dissect").label(ev)
    b = dk.create("method", "mammi").label(ev)
    assert (a.method, b.method) == ("clip-dissect", "mammi") and len(a) == len(b) == 7


# ---------------------------------------------------------------------------------------------
def _spatial(maps, masks, batch=2):
    def gen():
        for s in range(0, len(maps), batch):
            yield SpatialBatch(
                maps=torch.as_tensor(np.stack(maps[s : s + batch])), masks=masks[s : s + batch]
            )

    return gen


def _nd_evidence(maps, masks, concepts, **kw):
    K = maps[0].shape[0]
    n = len(maps)
    return Evidence(
        layer="layer4",
        activations=torch.zeros(n, K),
        image_embeddings=torch.zeros(n, 3),
        concepts=concepts,
        encode_texts=lambda ts: torch.zeros(len(ts), 3),
        spatial_maps=_spatial(maps, masks, **kw),
    )


def test_netdissect_hand_made_ious():
    # 2 images of 4x4 maps = masks (no resizing), 32 pixels; quantile 0.25 -> 8 pixels above T
    rng = np.random.default_rng(0)
    m0 = np.zeros((2, 1, 4, 4), np.float32)
    m0[..., :] = rng.uniform(0, 1, size=(2, 1, 4, 4))  # background in [0, 1)
    hot = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]
    for r, (b, y, x) in enumerate(hot):
        m0[b, 0, y, x] = 10 + r  # the 8 top pixels: top-left 2x2 of each image
    # neuron 1 = neuron 0 flipped left-right
    maps = [np.concatenate([m0[b], m0[b, :, :, ::-1]], 0) for b in range(2)]
    a = np.zeros((4, 4), bool)
    a[0:2, 0:3] = True  # 6 px per image; overlaps neuron 0 on 4 -> IoU 8 / (8 + 12 - 8) = 8/12
    bmask = np.zeros((4, 4), bool)
    bmask[0:2, 3] = True  # 2 px, only in image 0 (image 1 has no "b" mask)
    masks = [{"a": a, "b": bmask, "not a concept": ~a}, {"a": a}]
    ev = _nd_evidence(maps, masks, ["a", "b", "c"])
    method = dk.create("method", "netdissect", quantile=0.25, min_iou=0.3)
    S = method.scores(ev).numpy()
    assert S[0] == pytest.approx([8 / 12, 0.0, 0.0])
    # neuron 1: top-right 2x2 of both images; a meets it on column 2 (2 px per image) -> 4 / 16;
    # b lies inside it on image 0 -> 2 / (8 + 2 - 2)
    assert S[1] == pytest.approx([4 / 16, 2 / 8, 0.0])
    out = method.label(ev)
    assert out.neurons == [[("a", pytest.approx(8 / 12))], []]  # neuron 1 is below min_iou
    low = dk.create("method", "netdissect", quantile=0.25, min_iou=0.2).label(ev)
    assert low.neurons[1] == [("a", 0.25), ("b", 0.25)]  # ties keep the concept order
    assert dk.create("method", "netdissect", quantile=0.25, min_iou=0.99).label(ev).neurons == [[], []]


def test_netdissect_upsamples_bilinearly_and_threshold_is_accurate():
    rng = np.random.default_rng(1)
    n, K = 12, 3
    maps = [rng.standard_normal((K, 6, 6)).astype(np.float32) ** 3 for _ in range(n)]
    masks = [{"c": rng.random((30, 30)) > 0.7} for _ in range(n)]
    ev = _nd_evidence(maps, masks, ["c"], batch=5)
    method = dk.create("method", "netdissect")
    ups = torch.nn.functional.interpolate(
        torch.as_tensor(np.stack(maps)), size=(30, 30), mode="bilinear", align_corners=False
    )
    T = method.thresholds(ev, 0, K, "cpu")
    for k in range(K):
        frac = float((ups[:, k] > T[k]).float().mean())
        assert abs(frac - 0.005) < 1e-3
    # IoU from the thresholded upsampled maps, computed directly
    L = torch.as_tensor(np.stack([m["c"] for m in masks]))
    S = method.scores(ev)
    for k in range(K):
        M = ups[:, k] > T[k]
        want = float((M & L).sum()) / float((M | L).sum())
        assert float(S[k, 0]) == pytest.approx(want, rel=1e-6)


def _brute_force_iou(maps, masks, names, q, side):
    """Network Dissection computed directly, image by image, on each image's comparison grid."""
    ups, labs = [], []
    for m, ms in zip(maps, masks, strict=True):
        if not ms:
            continue
        H, W = next(iter(ms.values())).shape
        s = min(1.0, side / max(H, W))
        gh, gw = (max(1, round(H * s)), max(1, round(W * s))) if s < 1 else (H, W)
        iy = [min(H - 1, int((i + 0.5) * H / gh)) for i in range(gh)]
        ix = [min(W - 1, int((j + 0.5) * W / gw)) for j in range(gw)]
        up = torch.nn.functional.interpolate(torch.as_tensor(m)[:, None], size=(gh, gw), mode="bilinear", align_corners=False)[:, 0]
        ups.append(up.flatten(1))
        labs.append(torch.stack([torch.as_tensor(ms[c][np.ix_(iy, ix)] if c in ms else np.zeros((gh, gw), bool)).flatten() for c in names], 1))
    vals, L = torch.cat(ups, 1), torch.cat(labs, 0)
    rank = round(q * vals.shape[1]) + 1
    thr = vals.sort(1, descending=True).values[:, rank - 1]
    M = vals > thr.unsqueeze(1)
    inter = M.double() @ L.double()
    union = M.sum(1, keepdim=True).double() + L.sum(0).double() - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def test_netdissect_matches_brute_force_on_the_comparison_grid():
    # masks larger than the grid are sampled down to it (longer side `resolution`), smaller ones
    # stay; maps of two sizes of mask in one batch; images without masks are left out
    rng = np.random.default_rng(5)
    K, names = 4, ["a", "b", "c"]
    maps = [rng.standard_normal((K, 5, 3)).astype(np.float32) for _ in range(11)]
    masks = []
    for i in range(11):
        H, W = (90, 60) if i % 3 else (20, 16)
        masks.append(None if i == 4 else {c: rng.random((H, W)) > 0.6 + 0.1 * j for j, c in enumerate(names) if (i + j) % 4})
    ev = _nd_evidence(maps, masks, names + ["no mask"], batch=3)
    want = _brute_force_iou(maps, masks, names, 0.05, 30)
    S = dk.create("method", "netdissect", quantile=0.05, resolution=30).scores(ev)
    assert S.shape == (K, 4) and torch.equal(S[:, 3], torch.zeros(K))
    assert torch.allclose(S[:, :3].double(), want, atol=1e-12)
    # the same bits whatever the batching of images and the pieces max_memory_mb allows
    other = _nd_evidence(maps, masks, names + ["no mask"], batch=7)
    assert torch.equal(dk.create("method", "netdissect", quantile=0.05, resolution=30, max_memory_mb=0.4).scores(other), S)
    # the histogram path (when the exact merge does not fit max_memory_mb) agrees to a pixel or so
    tight = dk.create("method", "netdissect", quantile=0.05, resolution=30, max_memory_mb=0.005)
    assert not tight._plan(*tight._survey(ev)[:2])[0]
    assert torch.allclose(tight.scores(ev)[:, :3].double(), want, atol=2e-3)
    # resolution null: the masks' own size, as the published method on its own masks
    full = dk.create("method", "netdissect", quantile=0.05, resolution=None).scores(ev)
    assert torch.allclose(full[:, :3].double(), _brute_force_iou(maps, masks, names, 0.05, 10**6), atol=1e-12)


def test_netdissect_running_top_pixels_is_exact_with_ties():
    # integer values (many ties at the threshold) offered in pieces of varied width: T is the
    # rank-th largest value and exactly the pixels above it are reported, with their indices
    from dissectkit.labelling.spatial_grid import TopPixels

    gen = torch.Generator().manual_seed(6)
    V = torch.randint(0, 40, (3, 2000), generator=gen).float()
    V[1] = 5.0  # a constant neuron: nothing lies above its threshold
    for rank in (1, 7, 150, 2000):
        top, s = TopPixels(3, rank, "cpu"), 0
        for w in (13, 400, 1, 700, 886):
            top.add(V[:, s : s + w], s)
            s += w
        T, above, where = top.result()
        assert torch.equal(T, V.sort(1, descending=True).values[:, rank - 1])
        for k in range(3):
            assert sorted(where[k][above[k]].tolist()) == (V[k] > T[k]).nonzero().flatten().tolist()


def test_netdissect_coarse_histogram_path():
    # the histogram path (the exact merge does not fit max_memory_mb); many pixels: bins hold
    # < 5e-4 of the mass, so no refinement pass; error in quantile < 1e-3
    rng = np.random.default_rng(2)
    maps = [rng.standard_normal((2, 64, 64)).astype(np.float32) for _ in range(30)]
    masks = [{"c": np.ones((64, 64), bool)} for _ in range(30)]
    ev = _nd_evidence(maps, masks, ["c"], batch=8)
    method = dk.create("method", "netdissect", quantile=0.01, max_memory_mb=0.04)
    assert not method._plan(*method._survey(ev)[:2])[0]
    T = method.thresholds(ev, 0, 2, "cpu")
    allv = np.stack(maps)
    for k in range(2):
        assert abs(float((allv[:, k] > float(T[k])).mean()) - 0.01) < 1e-3


def test_netdissect_without_masks_names_mask_probes():
    ev = _evidence()
    with pytest.raises(EvidenceError, match="no masks.*synth-mammo"):
        dk.create("method", "netdissect").label(ev)
    assert dk.create("method", "netdissect").needs_masks is True


def test_netdissect_nan_maps():
    maps = [np.zeros((2, 4, 4), np.float32) for _ in range(2)]
    maps[1][1, 2, 2] = np.nan
    ev = _nd_evidence(maps, [{"a": np.ones((4, 4), bool)}] * 2, ["a"])
    with pytest.raises(EvidenceError, match=r"layer4.*neuron 1"):
        dk.create("method", "netdissect").label(ev)


# ---------------------------------------------------------------------------------------------
def test_mammi_threshold_compares_in_float32():
    # neuron 0: lo = 0, hi = 1, p = 93 -> tau = 1 - 1 * 0.07 in float32 = 0.93000000715...
    # image 1 sits exactly on tau: the published code (float32, strict >) drops it; a float64
    # comparison would keep it (0.93000000715 > 0.93), adding concept y to the list
    from dissectkit.builtin.methods.mammi import mammi_scores, mammi_threshold

    N = 10
    A = torch.zeros(N, 1)
    A[0, 0] = 1.0
    A[1, 0] = float(torch.tensor(1.0) - torch.tensor(1.0) * (1.0 - 93.0 / 100.0))
    tau = mammi_threshold(torch.zeros(1), torch.ones(1), 93.0)
    assert tau.dtype == torch.float32 and float(A[1, 0]) == float(tau[0])
    assert float(A[1, 0]) > 1.0 - 1.0 * (1.0 - 93.0 / 100.0)  # float64 would keep image 1
    V = torch.zeros(N, 4)
    V[:, 2] = 1.0
    V[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    V[1] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    table = {
        "A chest x-ray image of a": torch.tensor([0.0, 0.0, 0.0, 1.0]),
        "A chest x-ray image of a x": torch.tensor([1.0, 0.0, 0.0, 0.0]),
        "A chest x-ray image of a y": torch.tensor([0.0, 1.0, 0.0, 0.0]),
    }
    enc = lambda ts: torch.stack([table[t] for t in ts])  # noqa: E731
    _, sizes = mammi_scores(A, V, enc(["A chest x-ray image of a x", "A chest x-ray image of a y"]),
                            enc(["A chest x-ray image of a"])[0], 93.0)
    assert sizes.tolist() == [1]
    out = dk.create("method", "mammi").label(Evidence("fc", A, V, ["x", "y"], enc))
    assert out.neurons[0] == [("x", pytest.approx(1.0))]  # with image 1: [("x", 1.0), ("y", 1.0)]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("clip-dissect", {}),
        ("clip-dissect", {"similarity": "cos"}),
        ("clip-dissect", {"similarity": "cos3"}),
        ("clip-dissect", {"similarity": "wpmi"}),
        ("clip-dissect", {"similarity": "rank_reorder"}),
        ("mammi", {}),
    ],
)
def test_dead_neurons_get_no_concept_and_a_reason(method, params):
    ev = _evidence(K=6, seed=4)
    ev.activations[:, 1] = 0.0  # a dead ReLU unit
    ev.activations[:, 4] = 0.37  # constant, not zero: cos alone would label it
    out = dk.create("method", method, **params).label(ev)
    assert out.neurons[1] == [] and out.neurons[4] == []
    assert out.reasons[1] == out.reasons[4] == "dead" and out.dead == [1, 4]
    assert all(out.neurons[k] for k in (0, 2, 3, 5)) or method == "mammi"
    assert all(out.reasons.get(k) != "dead" for k in (0, 2, 3, 5))
    restored = LayerLabels.from_dict(out.to_dict())
    assert restored.reasons == out.reasons


def test_one_dead_neuron_rule_decides_every_use(monkeypatch, tmp_path):
    """Every use of "constant over the valid probe images" reads ``Moments.constant``: redefine the
    rule (here: "neuron 1 is dead") and the stream, the methods, the run's top images, label quality
    and netdissect all follow it, while the really constant neuron 4 is no longer dead anywhere."""
    from dissectkit.engine.cache import Cache
    from dissectkit.labelling.quality import layer_quality
    from dissectkit.labelling.streaming import ActivationStream, Moments
    from dissectkit.results.evidence import streaming_top_images

    ev = _evidence(K=6, seed=4)
    A = ev.activations
    A[:, 4] = 0.37  # constant: dead by the real rule
    assert ActivationStream.from_tensor(A).dead.tolist() == [k == 4 for k in range(6)]
    monkeypatch.setattr(Moments, "constant", property(lambda self: torch.arange(len(self.min)) == 1))
    assert ActivationStream.from_tensor(A).dead.tolist() == [k == 1 for k in range(6)]
    for method, params in (("clip-dissect", {}), ("clip-dissect", {"similarity": "cos"}), ("mammi", {})):
        assert dk.create("method", method, **params).label(ev).dead == [1], method
    entry = Cache(tmp_path).entry("acts", "rule", A.shape[0], 64, {})
    for c in range(entry.n_chunks):
        rows = list(entry.chunk_range(c))
        entry.write_chunk(c, A[rows], torch.ones(len(rows), dtype=torch.bool))
    top = streaming_top_images(entry, 3)
    assert top.indices[1] == [] and top.indices[4] == [0, 1, 2]  # ties by the lower index
    quality = layer_quality(A, ev.image_embeddings, ev.encode_texts(CONCEPTS), [0, 1, 2, 3, 4, 5])
    assert quality["sim_corr"][1] is None and quality["sim_corr"][4] == 0.0
    maps = [np.random.default_rng(i).standard_normal((3, 4, 4)).astype(np.float32) for i in range(3)]
    for m in maps:
        m[2] = 2.0  # constant maps
    out = dk.create("method", "netdissect", quantile=0.2).label(_nd_evidence(maps, [{"a": m[0] > 0.5} for m in maps], ["a"]))
    assert out.dead == [1] and out.reason(2) == "no_match"


def test_netdissect_dead_and_unmatched_neurons_say_why():
    rng = np.random.default_rng(3)
    maps = [rng.standard_normal((3, 4, 4)).astype(np.float32) for _ in range(3)]
    for m in maps:
        m[1] = 2.0  # neuron 1: constant maps
    masks = [{"a": m[0] > 0.5} for m in maps]  # neuron 0's hot pixels: it matches "a"
    ev = _nd_evidence(maps, masks, ["a"])
    out = dk.create("method", "netdissect", quantile=0.2, min_iou=0.3).label(ev)
    assert out.label(0) == "a" and out.reason(0) is None
    assert out.neurons[1] == [] and out.reason(1) == "dead"
    assert out.neurons[2] == [] and out.reason(2) == "no_match"
    assert dk.create("method", "netdissect").uses_dissector is False
