"""CLI behaviour that needs no model run: start-up, validate, list, schema, cache."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import tiny_recipe

from dissectkit.cli import main


def test_help_does_not_import_torch():
    code = "import sys; from dissectkit.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("False")
    assert "validate" in out.stdout and "run" in out.stdout


def test_validate_accepts_a_good_recipe_and_checks_layers(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    assert main(["validate", str(recipe)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["validate", str(recipe), "--set", "target.layers=[layer9]"]) == 2
    assert "has no layer 'layer9'" in capsys.readouterr().err.replace("\n", " ")


def test_validate_reports_yaml_errors_with_position(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dissector: {name: open-clip\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "YAML syntax error" in err and "bad.yaml:" in err and "Traceback" not in err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "Recipe file not found" in capsys.readouterr().err


def test_list_and_schema_show_installed_components(capsys):
    assert main(["list", "similarity"]) == 0
    out = capsys.readouterr().out
    for name in ("cos", "cos3", "wpmi", "soft_wpmi", "rank_reorder"):
        assert name in out
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    names = [o["properties"]["name"]["const"] for o in schema["$defs"]["similarity_component"]["oneOf"]]
    assert "soft_wpmi" in names
    soft = next(o for o in schema["$defs"]["similarity_component"]["oneOf"] if o["properties"]["name"]["const"] == "soft_wpmi")
    assert soft["properties"]["params"]["properties"]["top_k"]["default"] == 100
    assert main(["list", "dissectors"]) == 2


def test_layers_command_lists_neuron_counts(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    assert main(["layers", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "layer4" in out and "512" in out and "3 selected" in out


def test_cache_ls_and_clear(tmp_path, tiny_openclip_dir, image_root, concepts_file, capsys):
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)
    cache = tmp_path / "cache"
    assert main(["run", str(recipe), "--quiet", "--set", f"runtime.cache_dir={cache}"]) == 0
    capsys.readouterr()
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "acts" in out and "embeds" in out and "layer4" in out
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert "Removed" in capsys.readouterr().out
    assert not (cache / "acts").exists()
