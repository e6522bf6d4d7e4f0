"""Streamed labelling: running top-k, validated activation streams, and streamed == materialised."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.contract import Similarity, adapt
from dissectkit.base.errors import EvidenceError
from dissectkit.builtin.similarities import LazyP
from dissectkit.host.hookspecs import hookimpl
from dissectkit.labelling.evidence import Evidence, LayerLabels
from dissectkit.labelling.streaming import ActivationStream, RunningTopK, stream_top, top_indices

CONCEPTS = [f"c{i}" for i in range(9)]


def _blocks(A: torch.Tensor, sizes: list[int]):
    """A chunk source over ``A`` with irregular block sizes (cycled), counting its passes."""
    calls = []

    def source():
        calls.append(1)
        s, i = 0, 0
        while s < A.shape[0]:
            n = sizes[i % len(sizes)]
            yield A[s : s + n].clone()
            s += n
            i += 1

    source.calls = calls
    return source


def _data(N=260, K=11, C=9, D=8, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    V = torch.nn.functional.normalize(torch.randn(N, D, generator=g), dim=1)
    T = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    if ties:  # few distinct values: ties everywhere, across every top-k boundary
        A = torch.randint(0, 4, (N, K), generator=g).float()
    else:
        A = torch.randn(N, K, generator=g).relu_() + 0.01 * torch.randn(N, K, generator=g)
    return V, T, A


class Table:
    def __init__(self, dim, seed=0):
        self.g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.table: dict[str, torch.Tensor] = {}

    def __call__(self, texts):
        for t in texts:
            if t not in self.table:
                self.table[t] = torch.nn.functional.normalize(torch.randn(self.dim, generator=self.g), dim=0)
        return torch.stack([self.table[t] for t in texts])


def _reference_top(A: torch.Tensor, k: int) -> torch.Tensor:
    """``[K, k]`` row indices by a stable sort of each column: descending, ties by the lower row."""
    return torch.tensor(np.array([np.argsort(-col, kind="stable")[:k] for col in A.T.numpy()]))


# ---------------------------------------------------------------------------------------------
SPLITS = {"one": [150], "ragged": [13, 1, 64, 72], "rows": [1] * 150, "tail": [3, 147]}


@pytest.mark.parametrize("k", [1, 5, 37, 150])
@pytest.mark.parametrize("split", sorted(SPLITS))
def test_running_top_k_equals_top_indices_with_ties(k, split):
    g = torch.Generator().manual_seed(k)
    A = torch.randint(0, 5, (150, 7), generator=g).float()
    A[:, 3] = 2.0  # all tied
    A[40:, 4] = -0.0
    A[:40, 4] = 0.0  # -0.0 == 0.0: ties by index as well
    A[:, 5] = torch.randn(150, generator=g) * 1e30  # wide range, negative values
    A[::7, 6] = -3.0
    want = _reference_top(A, k)  # the published order: descending, ties (-0.0 == 0.0) by index
    assert torch.equal(top_indices(A, k), want)
    top = RunningTopK(k)
    s = 0
    for n in SPLITS[split]:
        top.update(A[s : s + n], s)
        s += n
    idx, vals, payload = top.result()
    assert payload is None and top.seen == 150
    assert torch.equal(idx, want)
    assert torch.equal(vals, A.T.gather(1, want))


def test_running_top_k_keeps_fewer_rows_than_k_and_stream_top_needs_k():
    top = RunningTopK(10)
    top.update(torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0], [float("nan"), 2.0]]), [4, 9, 11, 12])
    idx, vals, _ = top.result()  # all 4 rows kept, best first; NaN ranks as -inf
    assert idx.tolist() == [[9, 11, 4, 12], [4, 9, 11, 12]]
    assert vals[0].tolist() == [3.0, 2.0, 1.0, float("-inf")]
    assert RunningTopK(3).result().indices.numel() == 0  # nothing streamed
    with pytest.raises(ValueError, match="only 4 rows"):
        stream_top(ActivationStream.from_tensor(torch.zeros(4, 2)), 10)


def _payload_run(values: torch.Tensor, rows: torch.Tensor, k: int, sizes: list[int]):
    """RunningTopK over ``values`` in blocks of ``sizes`` (cycled) with a payload ``(neuron, row)``."""
    top, asked, s, i = RunningTopK(k), [], 0, 0
    while s < len(rows):
        part = rows[s : s + sizes[i % len(sizes)]]

        def payload(cols, positions, part=part):
            asked.append(len(cols))
            return torch.stack([cols, part[positions]], 1)

        top.update(values[s : s + len(part)], part, payload)
        s, i = s + len(part), i + 1
    return top.result(), sum(asked)


@pytest.mark.parametrize("k", [1, 4, 37])
@pytest.mark.parametrize("split", sorted(SPLITS))
def test_payload_follows_every_kept_pair_through_ties_and_uneven_blocks(k, split):
    g = torch.Generator().manual_seed(k)
    values = torch.randint(0, 6, (150, 7), generator=g).float()  # many ties
    values[:, 3] = 1.0  # a constant column
    values[::5, 5] = -0.0
    rows = torch.arange(150) * 3 + 2  # not contiguous: skipped images leave gaps
    (idx, vals, payload), asked = _payload_run(values, rows, k, SPLITS[split])
    want = rows[_reference_top(values, k)]
    assert torch.equal(idx, want)  # the payload changes nothing in the order
    plain = RunningTopK(k)
    plain.update(values, rows)
    assert torch.equal(plain.result().indices, idx) and torch.equal(plain.result().values, vals)
    assert torch.equal(payload[..., 0], torch.arange(7).unsqueeze(1).expand(7, k))
    assert torch.equal(payload[..., 1], idx)  # each slot holds its own pair's payload, best first
    if split != "one":
        assert asked < 7 * 150  # only pairs entering the top are asked for


def test_payload_is_given_with_every_block_or_none():
    top = RunningTopK(2)
    top.update(torch.ones(3, 2), 0, lambda cols, pos: torch.zeros(len(cols)))
    with pytest.raises(ValueError, match="every block or with none"):
        top.update(torch.ones(3, 2), 3)


def test_stream_moments_and_validation():
    _, _, A = _data(N=100, K=4)
    A[:, 2] = 3.5
    stream = ActivationStream(_blocks(A, [30, 7]), 100, "blocks.1")
    m = stream.moments
    assert torch.equal(m.min, A.min(0).values) and torch.equal(m.max, A.max(0).values) and m.count == 100
    assert stream.dead.tolist() == [False, False, True, False]
    assert stream.n_neurons == 4
    idx, _ = stream_top(stream, 9)
    assert torch.equal(idx, _reference_top(A, 9))
    with pytest.raises(EvidenceError, match=r"cover 100 images but the image embeddings cover 101"):
        list(ActivationStream(_blocks(A, [30]), 101, "blocks.1").blocks())
    with pytest.raises(EvidenceError, match=r"at least 30 images .* cover 20"):
        list(ActivationStream(_blocks(A, [30]), 20, "blocks.1").blocks())
    bad = A.clone()
    bad[70, 1] = float("nan")
    with pytest.raises(EvidenceError, match=r"blocks\.1.*neuron 1"):
        _ = ActivationStream(_blocks(bad, [30]), 100, "blocks.1").moments

    def ragged():
        yield A[:10]
        yield A[10:, :3]

    with pytest.raises(EvidenceError, match="disagree on the number of neurons: 3 after 4"):
        list(ActivationStream(ragged, 100, "blocks.1").blocks())


# ---------------------------------------------------------------------------------------------
PASSES = {"cos": 1, "cos3": 2, "wpmi": 1, "soft_wpmi": 1, "rank_reorder": 1}


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("name", sorted(PASSES))
def test_similarity_streamed_equals_materialised(name, ties):
    V, T, A = _data(ties=ties, seed=3)
    sim = dk.create("similarity", name)
    want = sim(LazyP(V, T), A)
    source = _blocks(A, [17, 64, 5])
    got = sim(LazyP(V, T), ActivationStream(source, A.shape[0], "l"))
    assert len(source.calls) == PASSES[name]
    if name in ("cos", "cos3"):  # sums in another order: equal to float rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    else:  # the same top-k sets and order: the same numbers
        assert torch.equal(got, want)
    dense = sim(V @ T.T, ActivationStream(_blocks(A, [100]), A.shape[0]))
    torch.testing.assert_close(dense, want, rtol=1e-4, atol=1e-5)


def _chunked(ev: Evidence, sizes):
    source = _blocks(ev.activations, sizes)
    out = Evidence(
        ev.layer,
        None,
        ev.image_embeddings,
        ev.concepts,
        ev.encode_texts,
        seed=ev.seed,
        activation_chunks=source,
    )
    return out, source


METHODS = [
    ("clip-dissect", {}, 1),
    ("clip-dissect", {"similarity": "cos"}, 1),
    ("clip-dissect", {"similarity": "cos3"}, 2),
    ("clip-dissect", {"similarity": "wpmi"}, 1),
    ("clip-dissect", {"similarity": "rank_reorder"}, 1),
    ("mammi", {"beta": 0.6}, 2),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("method", "params", "passes"), METHODS)
def test_method_on_chunks_equals_method_on_tensor(method, params, passes, ties):
    V, _, A = _data(N=240, K=10, D=8, seed=5, ties=ties)
    A[:, 6] = 1.25  # dead
    ev = Evidence("blocks.2", A, V, CONCEPTS, Table(8, seed=1))
    chunked, source = _chunked(ev, [50, 3, 100])
    assert chunked.activations is None and chunked.n_images == 240 and chunked.n_neurons == 10
    m = dk.create("method", method, **params)
    want, got = m.label(ev), m.label(chunked)
    assert len(source.calls) == passes + 1  # + the n_neurons peek above
    assert [[c for c, _ in r] for r in got.neurons] == [[c for c, _ in r] for r in want.neurons]
    for g_, w_ in zip(got.neurons, want.neurons, strict=True):
        assert [s for _, s in g_] == pytest.approx([s for _, s in w_], rel=1e-5, abs=1e-6)
    assert got.reasons == want.reasons
    assert got.neurons[6] == [] and got.reasons[6] == "dead" and got.dead == [6]


def test_evidence_forms_and_iteration():
    V, _, A = _data(N=50, K=3)
    ev = Evidence("l", A, V, CONCEPTS, Table(8))
    assert torch.equal(torch.cat(list(ev.iter_activations())), A)
    assert (ev.n_images, ev.n_neurons) == (50, 3)
    half = A.double()
    ch = Evidence("l", None, V, CONCEPTS, Table(8), activation_chunks=lambda: iter([half[:20], half[20:]]))
    blocks = list(ch.iter_activations())
    assert [b.dtype for b in blocks] == [torch.float32] * 2 and torch.equal(torch.cat(blocks), A)
    assert list(ch.iter_activations())  # a fresh iterator every time
    with pytest.raises(EvidenceError, match="no activations"):
        Evidence("l", None, V, CONCEPTS, Table(8))


def test_layer_labels_reasons_round_trip_and_old_files():
    ll = LayerLabels("l", "mammi", {}, [[("a", 1.0)], [], []], reasons={2: "dead", 1: "no_match"})
    d = ll.to_dict()
    assert d["reasons"] == {"1": "no_match", "2": "dead"}
    back = LayerLabels.from_dict(d)
    assert back == ll and back.dead == [2] and back.reason(1) == "no_match" and back.reason(0) is None
    del d["reasons"]  # a labels.json written before the field existed
    assert LayerLabels.from_dict(d).reasons == {}


def test_uses_dissector():
    assert dk.create("method", "clip-dissect").uses_dissector is True
    assert dk.create("method", "mammi").uses_dissector is True
    assert dk.create("method", "netdissect").uses_dissector is False

    class ThirdParty:  # declares nothing: adapted, it gets the default
        name = "x"

        def label(self, evidence):
            raise NotImplementedError

    assert adapt("method", ThirdParty()).uses_dissector is True


def test_a_plugin_similarity_gets_the_same_stream_as_the_built_ins(dissectkit_plugin):
    V, _, A = _data(N=120, K=5)
    seen = []

    class Streamed(Similarity):  # a third-party similarity: reads the row blocks it is given
        def __call__(self, P, acts):
            seen.append((tuple(P.shape), type(acts), [len(b) for _, b in acts.blocks()]))
            return acts.materialise().T @ P

    class Plugin:
        @staticmethod
        @hookimpl
        def dissectkit_register_similarities(register):
            register("streamed", lambda params, ctx: Streamed())

    dissectkit_plugin(Plugin, name="streamed-similarity")
    method = dk.create("method", "clip-dissect", similarity="streamed")
    ev, _ = _chunked(Evidence("l", A, V, CONCEPTS, Table(8)), [50])
    out = method.label(ev)
    assert seen == [((120, len(CONCEPTS)), ActivationStream, [50, 50, 20])]
    S = A.T @ (torch.nn.functional.normalize(V, dim=1) @ Table(8)(CONCEPTS).T)
    assert out.topk(3) == [[CONCEPTS[j] for j in row] for row in S.argsort(1, descending=True)[:, :3].tolist()]
