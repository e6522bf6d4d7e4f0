"""Start-up: `validate` and `layers` list layers from architectures alone (no torch for the synthetic
world, no weights read for any target); `run`'s resolve reads each weights file once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dissectkit as dk
from dissectkit import weights
from dissectkit.cli import main
from dissectkit.context import BuildContext
from dissectkit.errors import DissectkitError
from dissectkit.synthetic import arch

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
SYNTH_TARGETS = ("synth-effnet-concepts", "synth-effnet-malignancy", "synth-effnet-general")
CTX = BuildContext(device="cpu", offline=True)


@pytest.fixture
def count_weights(monkeypatch):
    """Counts per file of weights.load_checkpoint and weights.file_fingerprint calls."""
    counts: dict[str, dict[str, int]] = {"load": {}, "hash": {}}
    for name, key in (("load_checkpoint", "load"), ("file_fingerprint", "hash")):
        real = getattr(weights, name)

        def counted(path, *a, real=real, key=key, **k):
            counts[key][Path(path).name] = counts[key].get(Path(path).name, 0) + 1
            return real(path, *a, **k)

        monkeypatch.setattr(weights, name, counted)
    return counts


def test_quickstart_validate_and_layers_import_neither_torch_nor_timm():
    code = (
        "import sys\nfrom dissectkit.cli import main\n"
        f"codes = [main(['validate', {str(QUICKSTART)!r}]), main(['layers', {str(QUICKSTART)!r}])]\n"
        "print(codes, sorted(m for m in ('torch', 'timm', 'torchvision', 'safetensors.torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[0, 0] []"), out.stdout[-300:]
    assert "valid" in out.stdout and "blocks.5" in out.stdout and "3 selected" in out.stdout


@pytest.mark.parametrize("name", SYNTH_TARGETS)
def test_synth_layer_table_equals_the_built_target(name):
    """The packaged table + the config's class count == the layers of the loaded model."""
    from dissectkit.plugins import get_host

    spec = get_host().registry.get("target", name)
    listed = spec.metadata["layers"](spec.validate({}), CTX)
    built = dk.create("target", name, _ctx=CTX).layers()
    assert listed == built
    assert listed[-1].n_neurons == {"synth-effnet-concepts": 20, "synth-effnet-malignancy": 1, "synth-effnet-general": 8}[name]


def test_synth_layer_table_is_the_architecture():
    """The committed table is what the architecture gives today (regenerate: models.write_layer_table())."""
    from dissectkit.synthetic import models

    for n in (1, 7):
        assert arch.effnet_layers(n) == models.effnet_layer_infos(n)
    assert json.loads(arch.LAYER_TABLE.read_text())["input"] == list(arch.MODEL_INPUT)


def _world_copy(tmp_path: Path) -> Path:
    """The synthetic world's config next to a weights file that is not a weights file."""
    shutil.copy(arch.WEIGHTS_DIR / arch.CONFIG_FILE, tmp_path / arch.CONFIG_FILE)
    garbage = tmp_path / "concepts.safetensors"
    garbage.write_bytes(b"\x00not safetensors")
    return garbage


def test_validate_and_layers_never_read_weights(tmp_path, capsys, count_weights):
    garbage = _world_copy(tmp_path)
    absent = tmp_path / "absent.safetensors"
    unreadable = f"target.params={{weights: {{path: '{garbage}'}}}}"
    assert main(["validate", str(QUICKSTART), "--set", unreadable]) == 0
    out = capsys.readouterr()
    assert "valid" in out.out and "warning" not in out.err
    assert main(["layers", str(QUICKSTART), "--set", unreadable]) == 0
    assert "3 selected" in capsys.readouterr().out
    # an absent file is a warning; the layer names are still checked
    missing = f"target.params={{weights: {{path: '{absent}'}}}}"
    assert main(["validate", str(QUICKSTART), "--set", missing]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "warning" in err and "absent.safetensors" in err and "not found" in err
    assert main(["validate", str(QUICKSTART), "--set", missing, "--set", "target.layers=[blocks.9]"]) == 2
    assert "has no layer 'blocks.9'" in capsys.readouterr().err.replace("\n", " ")
    assert count_weights == {"load": {}, "hash": {}}
    # the run would refuse the unreadable file
    rec = dk.load_recipe(QUICKSTART, [unreadable])
    from dissectkit.engine import resolve

    with pytest.raises(DissectkitError, match="concepts.safetensors"):
        resolve(rec)


def test_validate_warns_of_missing_weights_of_any_target(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(QUICKSTART.read_text().replace(
        "  name: synth-effnet-concepts\n  layers: [blocks.1, blocks.5, classifier]",
        f"  name: timm\n  params: {{model: resnet10t, num_classes: 3, input_size: [3, 32, 32], checkpoint: '{tmp_path / 'w.pth'}'}}\n"
        "  layers: [layer4, fc]",
    ))
    assert main(["validate", str(recipe)]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "target 'timm'" in err and "w.pth" in err and "not found" in err and "r.yaml:" in err
    assert main(["layers", str(recipe)]) == 0
    assert "2 selected" in capsys.readouterr().out


def test_resolve_reads_each_weights_file_once(count_weights):
    from dissectkit.engine import resolve

    res = resolve(dk.load_recipe(QUICKSTART, ["runtime.device=cpu"]))
    for _ in range(3):  # cache keys ask for fingerprints per layer and chunk
        for slot in res.targets.values():
            slot.instance.fingerprint()
        for d in res.dissectors.values():
            d.fingerprint()
    files = arch.read_config()["files"]
    expected = {Path(files["synth-clip"]).name: 1, Path(files["synth-effnet-concepts"]).name: 1}
    assert count_weights == {"load": expected, "hash": expected}
