"""Similarity functions vs straightforward per-neuron float64 implementations of docs/methods.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.errors import ComponentError, EvidenceError
from dissectkit.builtin.similarities import LazyP, top_indices

# ---------------------------------------------------------------------------------------------
# references, one neuron (and concept) at a time, written from the formulas


def _top(a, k):
    return np.argsort(-a, kind="stable")[:k]  # descending, ties by lower image index


def _softmax(x):
    x = x - x.max(1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(1, keepdims=True)


def ref_cos(P, A):
    K, C = A.shape[1], P.shape[1]
    S = np.zeros((K, C))
    for k in range(K):
        for c in range(C):
            a, p = A[:, k], P[:, c]
            na, npp = np.linalg.norm(a), np.linalg.norm(p)
            S[k, c] = 0.0 if na == 0 or npp == 0 else a @ p / (na * npp)
    return S


def ref_cos3(P, A):
    K, C = A.shape[1], P.shape[1]
    S = np.zeros((K, C))
    for k in range(K):
        a = (A[:, k] - A[:, k].mean()) ** 3
        a = a / max(np.linalg.norm(a), 1e-3)
        for c in range(C):
            p = (P[:, c] - P[:, c].mean()) ** 3
            p = p / max(np.linalg.norm(p), 1e-3)
            S[k, c] = a @ p
    return S


def _pmi(L, lam):
    K = L.shape[0]
    m = L.max(0)
    prior = m + np.log(np.exp(L - m).sum(0)) - np.log(K)
    return L - lam * prior


def ref_wpmi(P, A, top_k=28, a=2.0, lam=0.6, eps=1e-7):
    Q = _softmax(a * P)
    L = np.zeros((A.shape[1], P.shape[1]))
    for k in range(A.shape[1]):
        for i in _top(A[:, k], top_k):
            L[k] += np.log(Q[i] + eps)
    return _pmi(L, lam)


def ref_soft_wpmi(P, A, top_k=100, a=10.0, lam=1.0, eps=1e-7, p_start=0.998, p_end=0.97):
    Q = _softmax(a * P)
    L = np.zeros((A.shape[1], P.shape[1]))
    for k in range(A.shape[1]):
        for j, i in enumerate(_top(A[:, k], top_k)):
            pj = p_start - (j / top_k) * (p_start - p_end)
            L[k] += np.log(1 + pj * (Q[i] - 1) + eps)
    return _pmi(L, lam)


def ref_rank_reorder_err(P, A, p=3.0, top_fraction=0.05, scale_p=0.5):
    """``err[k, c]`` without the per-neuron random baseline."""
    N = P.shape[0]
    n = math.floor(N * top_fraction)
    E = np.zeros((A.shape[1], P.shape[1]))
    for k in range(A.shape[1]):
        idx = _top(A[:, k], n)
        acts = A[idx, k]
        asc = np.sort(acts)
        for c in range(P.shape[1]):
            pv = P[idx, c]
            r = np.argsort(np.argsort(pv, kind="stable"), kind="stable")
            E[k, c] = np.mean(np.abs(acts - asc[r]) ** p) / np.mean(pv) ** scale_p
    return E


REFS = {"cos": ref_cos, "cos3": ref_cos3, "wpmi": ref_wpmi, "soft_wpmi": ref_soft_wpmi}


def _data(N=240, K=9, C=13, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    I = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=1)  # noqa: E741
    T = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    A = torch.randn(N, K, generator=g).relu_() + 0.01 * torch.randn(N, K, generator=g)
    return I, T, I @ T.T, A


def _close(S, R, atol=1e-12):
    S = np.asarray(S, dtype=np.float64)
    assert not np.isnan(S).any()
    assert np.abs(S - R).max() <= 1e-4 * np.abs(R).max() + atol, np.abs(S - R).max()


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REFS))
def test_matches_reference_dense_and_lazy(name):
    V, T, P, A = _data()
    sim = dk.create("similarity", name)
    R = REFS[name](P.double().numpy(), A.double().numpy())
    S = sim(P, A)
    assert S.shape == (A.shape[1], P.shape[1]) and S.dtype == torch.float32
    _close(S, R)
    _close(sim.from_embeddings(V, T, A), R)
    _close(sim(LazyP(V, T), A), R)


@pytest.mark.parametrize("name", sorted(REFS))
def test_chunked_equals_unchunked(name):
    _, _, P, A = _data(seed=1)
    full = dk.create("similarity", name)(P, A)
    tiny = dk.create("similarity", name, max_memory_mb=0.01, chunk_size=2)(P, A)
    torch.testing.assert_close(tiny, full, rtol=1e-5, atol=1e-5)


def test_wpmi_prior_spans_every_chunk():
    # with a memory bound so small that each neuron's rows are a separate group, the prior still
    # couples all neurons: the result equals the reference computed over the whole layer
    _, _, P, A = _data(N=150, K=7, C=5, seed=2)
    sim = dk.create("similarity", "soft_wpmi", top_k=40, max_memory_mb=0.0005, chunk_size=1)
    _close(sim(P, A), ref_soft_wpmi(P.double().numpy(), A.double().numpy(), top_k=40))


def test_non_default_params():
    _, _, P, A = _data(seed=3)
    prm = dict(top_k=17, a=5.0, lam=0.3, eps=1e-5, p_start=0.9, p_end=0.5)
    S = dk.create("similarity", "soft_wpmi", **prm)(P, A)
    _close(S, ref_soft_wpmi(P.double().numpy(), A.double().numpy(), **prm))
    S = dk.create("similarity", "wpmi", top_k=60, a=3.0, lam=1.0, eps=0.0)(P, A)
    _close(S, ref_wpmi(P.double().numpy(), A.double().numpy(), top_k=60, a=3.0, lam=1.0, eps=0.0))


def test_rank_reorder_equal_up_to_baseline_with_identical_rankings():
    g = torch.Generator().manual_seed(4)
    N, K, C = 400, 6, 11
    P = 0.1 + torch.rand(N, C, generator=g)  # CLIP cosines of real images are positive
    A = torch.randn(N, K, generator=g)
    S = dk.create("similarity", "rank_reorder")(P, A).double().numpy()
    E = ref_rank_reorder_err(P.double().numpy(), A.double().numpy())
    assert np.isfinite(S).all() and (S <= 0).all()
    for k in range(K):
        scale = -E[k] / S[k]  # the neuron's baseline
        assert np.allclose(scale, scale[0], rtol=1e-4)
        assert scale[0] > 0
        assert np.array_equal(np.argsort(-S[k], kind="stable"), np.argsort(E[k], kind="stable"))


def test_rank_reorder_baseline_is_seeded():
    g = torch.Generator().manual_seed(5)
    P = 0.1 + torch.rand(300, 4, generator=g)
    A = torch.randn(300, 3, generator=g)
    a = dk.create("similarity", "rank_reorder", seed=1)(P, A)
    b = dk.create("similarity", "rank_reorder", seed=1)(P, A)
    c = dk.create("similarity", "rank_reorder", seed=2)(P, A)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # chunked and lazy paths agree
    d = dk.create("similarity", "rank_reorder", seed=1, max_memory_mb=0.001, chunk_size=1)(P, A)
    torch.testing.assert_close(d, a)


@pytest.mark.parametrize("name", ["cos", "cos3", "wpmi", "soft_wpmi", "rank_reorder"])
def test_deterministic_and_dead_neuron(name):
    _, _, P, A = _data(N=300, seed=6)
    P = P + 1.1  # positive, for rank_reorder's mean^scale_p
    A[:, 2] = 0.7  # a dead (constant) neuron
    sim = dk.create("similarity", name)
    S1, S2 = sim(P, A), sim(P, A)
    assert torch.equal(S1, S2)
    assert torch.isfinite(S1).all()
    if name in ("cos", "cos3", "rank_reorder"):
        A[:, 2] = 0.0
        assert torch.all(sim(P, A)[2] == 0)


def test_ties_use_lowest_image_index():
    g = torch.Generator().manual_seed(7)
    N, K, C = 150, 5, 6
    A = torch.randint(0, 4, (N, K), generator=g).float()  # many ties, across the k-th value too
    P = torch.rand(N, C, generator=g)
    idx = top_indices(A, 37)
    for k in range(K):
        assert idx[k].tolist() == _top(A[:, k].numpy(), 37).tolist()
    for name, fn in (("soft_wpmi", ref_soft_wpmi), ("wpmi", ref_wpmi)):
        _close(dk.create("similarity", name)(P, A), fn(P.double().numpy(), A.double().numpy()))


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 1)])
def test_single_neuron_or_concept(name, shape):
    K, C = shape
    _, _, P, A = _data(N=120, K=K, C=C, seed=8)
    S = dk.create("similarity", name)(P, A)
    assert S.shape == (K, C)
    # C = 1: every Q is 1 and wpmi's scores are (1 - lam) * top_k * log(1 + eps) ~ 1e-6, below
    # float32 resolution of the summed logs; compare absolutely there
    _close(S, REFS[name](P.double().numpy(), A.double().numpy()), atol=1e-6 if C == 1 else 1e-12)


def test_top_k_larger_than_n_says_how_many_images():
    _, _, P, A = _data(N=60)
    with pytest.raises(EvidenceError, match="needs at least 100 probe images"):
        dk.create("similarity", "soft_wpmi")(P, A)
    with pytest.raises(EvidenceError, match="at least 20 probe images"):
        dk.create("similarity", "rank_reorder")(P[:10], A[:10])


def test_nan_and_inf_are_reported_with_the_neuron():
    _, _, P, A = _data()
    A[5, 3] = float("nan")
    sim = dk.create("similarity", "cos")
    with pytest.raises(EvidenceError, match="neuron 3"):
        sim(P, A)
    A[5, 3] = 0.0
    P[2, 1] = float("inf")
    with pytest.raises(EvidenceError, match="NaN or inf"):
        sim(P, A)


def test_params_are_validated():
    with pytest.raises(ComponentError, match="top_kk"):
        dk.create("similarity", "soft_wpmi", top_kk=3)
    spec = {s.name: s for s in dk.list_components("similarity")}["soft_wpmi"]
    d = spec.params().model_dump()
    assert (d["top_k"], d["a"], d["lam"], d["p_start"], d["p_end"]) == (100, 10.0, 1.0, 0.998, 0.97)


def test_lazy_p_statistics_match_dense():
    V, T, P, A = _data(seed=9)
    lazy = LazyP(V, T)
    torch.testing.assert_close(lazy.col_norm(), P.norm(dim=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lazy.col_mean(), P.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lazy.left_matmul(A), A.T @ P, rtol=1e-4, atol=1e-4)


def test_grouped_products_never_underflow():
    # a very peaked softmax makes most Q ~ 0, so each term sits at its lower bound (eps, or
    # 1 - p_j + eps with p_start = 1): the grouping must keep every product inside float range
    _, _, P, A = _data(N=200, K=6, C=9, seed=10)
    kw = dict(top_k=90, a=60.0, p_start=1.0, p_end=0.5)
    S = dk.create("similarity", "soft_wpmi", **kw)(P, A)
    _close(S, ref_soft_wpmi(P.double().numpy(), A.double().numpy(), **kw))
    S = dk.create("similarity", "wpmi", a=60.0, top_k=120)(P, A)
    _close(S, ref_wpmi(P.double().numpy(), A.double().numpy(), a=60.0, top_k=120))
