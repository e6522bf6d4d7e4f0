"""The conformance kit: every check passes on the built-ins and fails on a component that breaks
its contract; the ``dissectkit_plugin`` fixture registers a plugin module in-process."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit import testing as kit
from dissectkit.base.errors import PluginError
from dissectkit.base.types import Concept, ProbeItem
from dissectkit.host.manager import get_host
from dissectkit.pytest_plugin import dissectkit_plugin  # noqa: F401 - the fixture, also a pytest11 entry point


@pytest.mark.parametrize("name", ["cos", "cos3", "wpmi", "soft_wpmi", "rank_reorder"])
def test_check_similarity_passes_on_every_builtin(name):
    out = kit.check_similarity(dk.create("similarity", name))
    assert out["planted_top1"] == 1.0 and out["from_embeddings_deviation"] < 1e-4


@pytest.mark.parametrize("name", ["clip-dissect", "mammi", "netdissect"])
def test_check_method_passes_on_every_builtin(name):
    out = kit.check_method(dk.create("method", name))
    assert out["planted_top1"] == 1.0 and out["neurons"] == 6
    assert out["needs_masks"] is (name == "netdissect")


@pytest.mark.parametrize("name", ["csv", "json"])
def test_check_reporter_passes_on_table_reporters(name, tmp_path):
    out = kit.check_reporter(dk.create("reporter", name), tmp_path)
    assert out["files"] == [f"neurons.{name}"] and out["bytes"] > 100


def test_check_probe_concepts_target_on_the_synthetic_world():
    probe = dk.create("probe", "synth-mammo", n=12)
    assert kit.check_probe(probe, has_masks=True) == {"n": 12, "checked": 12, "with_masks": 12, "has_masks": True}
    with pytest.raises(AssertionError, match="not declared with has_masks"):
        kit.check_probe(probe)
    assert kit.check_concepts(dk.create("concepts", "synth-mammo-concepts", groups=["findings"]))["n"] > 3
    out = kit.check_target(dk.create("target", "synth-effnet-concepts"))
    assert out["layers"] > 10 and out["input"][0] == 3


# --------------------------------------------------------------------------- the checks can fail
class _Probe:
    def __init__(self, ids):
        self._ids = ids

    def __len__(self):
        return len(self._ids)

    def __getitem__(self, i):
        if i >= len(self._ids):
            raise IndexError(i)
        return ProbeItem(np.zeros((8, 8), dtype=np.uint8), self._ids[i])

    def ids(self):
        return list(self._ids)

    def fingerprint(self):
        return "fp"


def test_check_probe_catches_duplicate_ids_and_missing_index_error():
    assert kit.check_probe(_Probe(["a", "b"]))["n"] == 2
    with pytest.raises(AssertionError, match="ids\\(\\) are not unique"):
        kit.check_probe(_Probe(["a", "a"]))

    class Endless(_Probe):
        def __getitem__(self, i):
            return ProbeItem(np.zeros((8, 8), dtype=np.uint8), self._ids[i % len(self._ids)])

    with pytest.raises(AssertionError, match="past the end"):
        kit.check_probe(Endless(["a", "b"]))


def test_check_concepts_catches_duplicates():
    dup = types.SimpleNamespace(concepts=[Concept("mass"), Concept("mass")])
    with pytest.raises(AssertionError, match="duplicate concepts: \\['mass'\\]"):
        kit.check_concepts(dup)


def test_check_similarity_catches_a_transposed_or_unrelated_score():
    with pytest.raises(AssertionError, match="expected \\(K, C\\)"):
        kit.check_similarity(lambda P, A: P.T @ A.materialise())

    def anti(P, A):  # ranks the matching concept last
        return -(A.materialise().T @ P)

    with pytest.raises(AssertionError, match="ranks that concept first for only 0%"):
        kit.check_similarity(anti)


def test_check_method_catches_unsorted_and_wrong_labels():
    from dissectkit.labelling.evidence import LayerLabels

    class Backwards:
        name = "backwards"

        def label(self, evidence):
            texts = evidence.concept_texts
            K = evidence.activations.shape[1]
            return LayerLabels(evidence.layer, self.name, {}, [[(texts[0], 0.1), (texts[1], 0.9)] for _ in range(K)])

    with pytest.raises(AssertionError, match="not ranked by descending score"):
        kit.check_method(Backwards())

    class First:
        name = "first"

        def label(self, evidence):
            K = evidence.activations.shape[1]
            return LayerLabels(evidence.layer, self.name, {}, [[(evidence.concept_texts[-1], 1.0)] for _ in range(K)])

    with pytest.raises(AssertionError, match="planted concept ranked first for 0%"):
        kit.check_method(First())


def test_check_reporter_catches_writing_outside_and_nondeterminism(tmp_path):
    class Leaky:
        def write(self, run_result, out_dir):
            (out_dir / "ok.txt").write_text("x")
            (out_dir.parent / "stray.txt").write_text("y")

    with pytest.raises(AssertionError, match="outside out_dir: \\['stray.txt'\\]"):
        kit.check_reporter(Leaky(), tmp_path / "a")

    class Clock:
        n = 0

        def write(self, run_result, out_dir):
            Clock.n += 1
            (out_dir / "t.txt").write_text(str(Clock.n))

    with pytest.raises(AssertionError, match="second write gave different files"):
        kit.check_reporter(Clock(), tmp_path / "b")


def test_check_target_catches_a_wrong_neuron_count():
    target = dk.create("target", "synth-effnet-concepts")
    infos = target.layers()
    wrong = [infos[0].__class__(infos[0].name, infos[0].n_neurons + 1, infos[0].kind, infos[0].shape)]
    target.layers = lambda: wrong
    with pytest.raises(AssertionError, match=f"layer '{infos[0].name}' declares {infos[0].n_neurons + 1} neurons"):
        kit.check_target(target)


# --------------------------------------------------------------------------- in-process plugins
PLUGIN_SOURCE = '''
from dissectkit.plugin import Concept, Params, hookimpl

class WordsParams(Params):
    n: int = 2

class Words:
    def __init__(self, n):
        self.concepts = [Concept(f"kit word {i}") for i in range(n)]

@hookimpl
def dissectkit_register_concept_sets(registry):
    registry.add("concepts", "kit-words", lambda p, ctx: Words(p.n), params=WordsParams)
'''


@pytest.fixture
def words_module():
    module = types.ModuleType("dk_kit_words")
    exec(PLUGIN_SOURCE, module.__dict__)
    sys.modules["dk_kit_words"] = module
    yield module
    sys.modules.pop("dk_kit_words", None)


def test_fixture_registers_a_module_in_process(dissectkit_plugin, words_module):  # noqa: F811
    record = dissectkit_plugin("dk_kit_words")
    assert record.ok and record.components == ["concepts:kit-words"] and record.distribution == "in-process"
    words = dk.create("concepts", "kit-words", n=3)
    assert kit.check_concepts(words)["n"] == 3


def test_in_process_plugins_are_removed_and_failures_raise(words_module):
    host = get_host()
    record = host.add_plugin(words_module)
    assert "kit-words" in host.registry.names("concepts")
    host.remove_plugin(record)
    assert "kit-words" not in host.registry.names("concepts") and record not in host.records
    # a plugin reusing a built-in name fails atomically, through the fixture's register too
    clash = types.ModuleType("dk_kit_clash")
    exec(PLUGIN_SOURCE.replace('"kit-words"', '"synth-mammo-concepts"'), clash.__dict__)
    record = host.add_plugin(clash)
    assert not record.ok and "already has" in record.error
    assert host.registry.get("concepts", "synth-mammo-concepts").distribution == "dissectkit"
    host.remove_plugin(record)
    gen = dissectkit_plugin.__wrapped__()
    register = next(gen)
    with pytest.raises(PluginError, match="failed to register"):
        register(clash)
    with pytest.raises(StopIteration):
        next(gen)


def test_planted_evidence_is_what_it_says():
    ev = kit.planted_evidence(n_images=12, n_neurons=3, masks=True)
    assert ev.activations.shape == (12, 3) and ev.has_masks
    assert torch.equal(ev.activations.argmax(1), torch.arange(12) % 3)
    batch = next(ev.spatial_maps())
    assert batch.maps.shape == (12, 3, 8, 8) and list(batch.masks[0]) == ["concept 0"]


def test_the_examples_of_docs_plugins_md_pass_the_kit(dissectkit_plugin, tmp_path):  # noqa: F811
    """Every per-kind example of docs/plugins.md, run as one plugin module, passes its check."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    section = doc.split("## The seven kinds", 1)[1].split("## The reporter's view", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 7
    module = types.ModuleType("dk_docs_examples")
    exec(compile("\n".join(blocks), "docs/plugins.md", "exec"), module.__dict__)
    record = dissectkit_plugin(module)
    assert record.components == ["concepts:findings", "dissector:pixel-clip", "method:best-cosine", "probe:noise",
                                 "reporter:top-labels", "similarity:correlation", "target:tiny-cnn"]
    kit.check_dissector(dk.create("dissector", "pixel-clip"))
    kit.check_target(dk.create("target", "tiny-cnn"))
    kit.check_probe(dk.create("probe", "noise", n=5))
    kit.check_concepts(dk.create("concepts", "findings"))
    assert kit.check_similarity(dk.create("similarity", "correlation"))["planted_top1"] == 1.0
    assert kit.check_method(dk.create("method", "best-cosine"))["planted_top1"] == 1.0
    assert kit.check_reporter(dk.create("reporter", "top-labels"), tmp_path)["files"] == ["top_labels.csv"]
