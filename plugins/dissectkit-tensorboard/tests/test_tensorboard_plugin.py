"""The TensorBoard tracker, registered in-process with the kit's fixture, logs a real run of the
synthetic world: parameters, stage timings, per-layer thresholds, label tables, accuracy."""

from __future__ import annotations

import json

import pytest

import dissectkit as dk
from dissectkit.plugin import LayerLabels, layer_threshold
from dissectkit.pytest_plugin import dissectkit_plugin  # noqa: F401 - the kit's fixture (also a pytest11 entry point)

RECIPE = """\
name: tb
dissector: synth-clip
target: {name: synth-effnet-concepts, layers: [blocks.5, classifier]}
probe: {name: synth-mammo, params: {n: 24, height: 160, width: 96}}
concepts: {name: synth-mammo-concepts, params: {groups: [findings, distractors]}}
method: {name: clip-dissect, params: {similarity: soft_wpmi, similarity_params: {top_k: 5}}}
output: {dir: "%s", reporters: [json]}
runtime: {device: cpu, batch_size: 12, seed: 0}
"""


def _events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def _text(acc, tag: str) -> str:
    return acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()


@pytest.fixture
def logged_run(tmp_path, dissectkit_plugin):  # noqa: F811
    record = dissectkit_plugin("dissectkit_tensorboard")
    assert record.components == []  # event hooks only
    recipe_path = tmp_path / "tb.yaml"
    recipe_path.write_text(RECIPE % (tmp_path / "runs" / "tb"))
    result = dk.run(dk.load_recipe(recipe_path))
    runs = list((tmp_path / "runs" / "tensorboard" / "tb").iterdir())
    assert len(runs) == 1
    return result, _events(runs[0])


def test_parameters_stages_and_accuracy_are_logged(logged_run):
    result, acc = logged_run
    tags = acc.Tags()
    recipe_text = _text(acc, "run/recipe/text_summary")
    assert "run **tb**" in recipe_text and "synth-effnet-concepts" in recipe_text
    params = _text(acc, "run/parameters/text_summary")
    assert "| probe.params.n | 24 |" in params and "| method.0.name | clip-dissect |" not in params
    assert "| runtime.seed | 0 |" in params
    stages = [t for t in tags["scalars"] if t.startswith("stages/")]
    assert sorted(stages) == ["stages/extract_embed_seconds", "stages/label_seconds", "stages/report_seconds", "stages/resolve_seconds"]
    key = result.label_sets[0].key
    top1 = acc.Scalars(f"{key}/accuracy/top1")
    assert [s.step for s in top1] == [1]  # the classifier (layer index 1) has known truth
    assert top1[0].value == pytest.approx(result.measures[key]["classifier"]["top1"], abs=1e-6)


def test_thresholds_and_label_tables_match_the_run(logged_run):
    result, acc = logged_run
    labels = json.loads((result.out_dir / "labels.json").read_text())
    ls = labels["label_sets"][0]
    key = f"{ls['dissector']}/{ls['target']}/{ls['method']}"
    logged = acc.Scalars(f"{key}/threshold")
    assert [s.step for s in logged] == [0, 1]
    for s, layer in zip(logged, ["blocks.5", "classifier"], strict=True):
        ll = LayerLabels.from_dict(ls["layers"][layer])
        assert s.value == pytest.approx(layer_threshold(ll), rel=1e-6)
        table = acc.Tensors(f"{key}/labels/{layer}/text_summary")[0].tensor_proto.string_val[0].decode()
        first = ll.neurons[0]
        assert f"| 0 | {first[0][0]} | {first[0][1]:.4f} |" in table
        assert table.count("\n| ") == len(ll.neurons) + 1  # header separator + one row per neuron
    top_m = LayerLabels.from_dict(ls["layers"]["classifier"]).params["top_m"]
    assert [s.value for s in acc.Scalars(f"{key}/params/top_m")] == [top_m, top_m]  # the method's numeric params
    hp = acc.PluginTagToContent("hparams")
    assert sorted(hp) == ["_hparams_/experiment", "_hparams_/session_end_info", "_hparams_/session_start_info"]
    assert b"probe.params.n" in hp["_hparams_/session_start_info"] and b"summary/top1_mean" in hp["_hparams_/experiment"]
    assert acc.Scalars("summary/threshold_mean")[0].value == pytest.approx(
        sum(s.value for s in logged) / len(logged), rel=1e-6)


def test_turned_off_by_environment(tmp_path, dissectkit_plugin, monkeypatch):  # noqa: F811
    dissectkit_plugin("dissectkit_tensorboard")
    monkeypatch.setenv("DISSECTKIT_TENSORBOARD", "0")
    recipe_path = tmp_path / "tb.yaml"
    recipe_path.write_text(RECIPE % (tmp_path / "runs" / "tb"))
    dk.run(dk.load_recipe(recipe_path))
    assert not (tmp_path / "runs" / "tensorboard").exists()


def test_flatten_and_table():
    from dissectkit_tensorboard.tracker import flatten, label_table

    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}
    ll = LayerLabels("l", "m", {}, [[("mass", 0.5), ("skin", 0.25)], []])
    assert label_table(ll).splitlines()[2:] == ["| 0 | mass | 0.5000 | skin |", "| 1 | (no concept) |  |  |"]
