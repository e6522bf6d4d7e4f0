"""Recipe loading: YAML errors with positions, unknown keys, extends, overrides, pass 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import dissectkit as dk
from dissectkit.base.errors import RecipeError
from dissectkit.host.extends import merge
from dissectkit.host.recipe import parse_override

BASE = """\
dissector: {name: open-clip, params: {model: ViT-B-32}}
target:
  name: timm
  params: {model: resnet18}
  layers: [layer4]
probe: {name: image-folder, params: {root: data/images}}
concepts: {name: text, params: {path: concepts.txt}}
method: clip-dissect
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_recipe_normalises_single_forms(tmp_path):
    rec = dk.load_recipe(write(tmp_path, "r.yaml", BASE))
    assert [d.name for d in rec.dissectors] == ["open-clip"]
    assert rec.dissector is None and rec.targets[0].layers == ["layer4"]
    assert rec.methods[0].name == "clip-dissect" and rec.methods[0].params == {}
    assert rec.runtime.device == "auto" and rec.runtime.seed == 0
    assert [r.name for r in rec.output.reporters] == ["csv", "json"]
    assert rec.output_dir == Path("runs/r")


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "bad.yaml", BASE + "runtime: {device: cpu\n")
    with pytest.raises(RecipeError) as info:
        dk.load_recipe(path)
    msg = str(info.value)
    assert "YAML syntax error" in msg and f"{path}:" in msg
    line = int(msg.split(f"{path}:")[1].split(":")[0])
    assert line >= 9


def test_unknown_key_reports_line_column_and_suggestion(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "runtime:\n  devise: cpu\n")
    with pytest.raises(RecipeError) as info:
        dk.load_recipe(path)
    msg = str(info.value)
    assert f"{path}:10:3" in msg
    assert "unknown key 'runtime.devise'" in msg and "Did you mean 'device'" in msg


def test_unknown_top_level_key_and_wrong_type(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "outptu: {}\nruntime: {batch_size: many}\n")
    with pytest.raises(RecipeError) as info:
        dk.load_recipe(path)
    msg = str(info.value)
    assert f"{path}:9:1" in msg and "'output'" in msg
    assert "runtime.batch_size" in msg and "'many'" in msg


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="Recipe file not found: .*nope.yaml"):
        dk.load_recipe("nope.yaml")


def test_both_single_and_plural_is_an_error(tmp_path):
    path = write(tmp_path, "r.yaml", BASE + "methods: [mammi]\n")
    with pytest.raises(RecipeError, match="either 'method' or 'methods'"):
        dk.load_recipe(path)


def test_extends_deep_merges_relative_to_the_file(tmp_path):
    write(tmp_path, "base/common.yaml", BASE + "runtime: {batch_size: 4, seed: 3}\n")
    child = write(tmp_path, "recipes/child.yaml", """\
        extends: ../base/common.yaml
        target: {layers: [layer3, layer4]}
        runtime: {batch_size: 16}
    """)
    rec = dk.load_recipe(child)
    assert rec.runtime.batch_size == 16 and rec.runtime.seed == 3
    assert rec.targets[0].layers == ["layer3", "layer4"] and rec.targets[0].params == {"model": "resnet18"}
    # positions point at the file that said it
    assert rec.position("runtime", "batch_size").startswith(str(child))


def test_extends_cycle_is_detected(tmp_path):
    write(tmp_path, "a.yaml", "extends: b.yaml\n" + BASE)
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match=r"`extends` cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        dk.load_recipe(tmp_path / "a.yaml")


def test_extends_missing_parent(tmp_path):
    path = write(tmp_path, "a.yaml", "extends: nothere.yaml\n" + BASE)
    with pytest.raises(RecipeError, match=r"a.yaml:1:1: extended recipe .*nothere.yaml not found"):
        dk.load_recipe(path)


def test_set_overrides_are_parsed_as_yaml(tmp_path):
    path = write(tmp_path, "r.yaml", BASE)
    rec = dk.load_recipe(path, ["runtime.batch_size=3", "runtime.offline=true", "target.params.model=resnet50", "methods=[mammi, clip-dissect]"])
    assert rec.runtime.batch_size == 3 and rec.runtime.offline is True
    assert rec.targets[0].params["model"] == "resnet50"
    assert [m.name for m in rec.methods] == ["mammi", "clip-dissect"]


def test_override_needs_equals_sign():
    with pytest.raises(RecipeError, match="key.path=value"):
        parse_override("runtime.batch_size")


def test_merge_maps_key_by_key_lists_replace_and_null_removes():
    data, _ = merge({"a": {"b": 1, "c": [1], "e": 5}}, {"a": {"c": [2], "d": 3, "e": None}})
    assert data == {"a": {"b": 1, "c": [2], "d": 3}}


def test_extends_merges_params_only_into_the_same_component(tmp_path):
    write(tmp_path, "base.yaml", BASE.replace("method: clip-dissect", "method: {name: clip-dissect, params: {top_m: 7}}"))
    other = write(tmp_path, "other.yaml", """\
        extends: base.yaml
        dissector: {name: hf-clip}
        method: {name: mammi, params: {top_n: 3}}
    """)
    rec = dk.load_recipe(other)
    assert rec.dissectors[0].params == {} and rec.methods[0].params == {"top_n": 3}  # no ViT-B-32, no top_m
    assert rec.probe.params == {"root": "data/images"}  # not named: the base's probe, key by key
    same = write(tmp_path, "same.yaml", "extends: base.yaml\nmethod: {name: clip-dissect, params: {template: 'a {}'}}\n")
    assert dk.load_recipe(same).methods[0].params == {"top_m": 7, "template": "a {}"}


def test_extends_component_lists_follow_the_extending_recipe(tmp_path):
    write(tmp_path, "base.yaml", BASE.replace("method: clip-dissect", textwrap.dedent("""\
        methods:
          - {name: clip-dissect, params: {top_m: 7}}
          - {name: mammi, params: {top_n: 2}}
          - {name: clip-dissect, label: wide, params: {top_m: 20}}
        output: {reporters: [{name: csv, params: {top: 9}}, {name: html, params: {top_images: 2}}]}
    """)))
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        methods:
          - {name: netdissect}
          - {name: clip-dissect, label: wide, params: {template: 'x {}'}}
          - {name: clip-dissect, params: {similarity: wpmi}}
        output: {reporters: [json, csv]}
    """)
    rec = dk.load_recipe(child)
    assert [(m.display, m.params) for m in rec.methods] == [  # the child's items, in its order; mammi dropped
        ("netdissect", {}), ("wide", {"top_m": 20, "template": "x {}"}), ("clip-dissect", {"top_m": 7, "similarity": "wpmi"})]
    assert [(r.name, r.params) for r in rec.output.reporters] == [("json", {}), ("csv", {"top": 9})]
    assert rec.position("methods", 1, "params", "top_m").startswith(str(tmp_path / "base.yaml"))  # positions follow
    assert rec.position("methods", 1, "params", "template").startswith(str(child))
    inherits = write(tmp_path, "inherits.yaml", "extends: base.yaml\nruntime: {seed: 4}\n")
    assert [m.display for m in dk.load_recipe(inherits).methods] == ["clip-dissect", "mammi", "wide"]
    # an override that runs through a list the file lacks is set on the merged recipe
    assert dk.load_recipe(inherits, ["methods.1.params.top_n=5"]).methods[1].params == {"top_n": 5}


def test_duplicate_components_get_distinct_labels(tmp_path):
    path = write(tmp_path, "r.yaml", BASE.replace("dissector: {name: open-clip, params: {model: ViT-B-32}}",
                                                   "dissectors: [open-clip, open-clip, {name: open-clip, label: mine}]"))
    rec = dk.load_recipe(path)
    assert [d.display for d in rec.dissectors] == ["open-clip-1", "open-clip-2", "mine"]


def test_pass_two_reports_unknown_component_and_bad_params(tmp_path):
    from dissectkit.host.manager import get_host
    from dissectkit.host.recipe import validate_components

    text = BASE.replace("method: clip-dissect", "method: {name: clip-disect}").replace("{model: resnet18}", "{model: resnet18, num_classes: lots}")
    path = write(tmp_path, "r.yaml", text)
    rec = dk.load_recipe(path)
    with pytest.raises(RecipeError) as info:
        validate_components(rec, get_host().registry)
    msg = str(info.value)
    assert f"{path}:8:1" in msg and "Unknown method 'clip-disect'" in msg and "Did you mean 'clip-dissect'" in msg
    assert f"{path}:2:1" in msg and "num_classes" in msg
