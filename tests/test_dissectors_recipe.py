"""recipes/mammo_effnet.yaml: validates, and its target lists the 39 B5 blocks without any file."""

from __future__ import annotations

from pathlib import Path

import pytest

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.nn.layers import select_layers

pytest.importorskip("dissectkit_mammoclip")
pytestmark = pytest.mark.with_plugin("dissectkit_mammoclip")
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mammo_effnet.yaml"


def test_recipe_components_validate_and_layers_resolve(tmp_path):
    from dissectkit.host.manager import get_host
    from dissectkit.host.recipe import validate_components

    recipe = dk.load_recipe(RECIPE)
    validate_components(recipe, get_host().registry)
    assert recipe.dissectors[0].name == "mammo-clip" and recipe.dissectors[0].params["trust_checkpoint"] is True
    # Mammo-CLIP's own PNG conversion feeds both models (input parity with its training data)
    assert recipe.dissectors[0].params["conversion"] == recipe.targets[0].params["conversion"] == "mammo-clip"
    assert recipe.probe.name == "vindr-mammo" and recipe.concepts.name == "mammo-birads"
    ref = recipe.targets[0]
    target = dk.create("target", ref.name, _ctx=BuildContext(offline=True, cache_dir=tmp_path), **ref.params)
    chosen = select_layers(ref.layers, target.layers())
    assert [i.name for i in chosen] == [f"image_encoder._blocks.{i}" for i in range(39)]
    assert chosen[-1].n_neurons == 512
