"""Start-up: `validate` and `layers` list layers from architectures alone (no torch for the synthetic
world, no weights read for any target); `run`'s resolve reads each weights file once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dissectkit as dk
from dissectkit.base import weights
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import DissectkitError, WeightsError
from dissectkit.cli.app import main
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
        "import sys\nfrom dissectkit.cli.app import main\n"
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
    from dissectkit.host.manager import get_host

    spec = get_host().registry.get("target", name)
    listed = spec.layers(spec.validate({}), CTX)
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


def _synth_recipe(tmp_path: Path, targets: str) -> Path:
    """The quickstart with other targets."""
    path = tmp_path / "r.yaml"
    path.write_text(
        "dissector: {name: synth-clip}\n" + targets
        + "probe: {name: synth-mammo, params: {n: 10}}\nconcepts: {name: synth-mammo-concepts}\n"
        "method: {name: clip-dissect, params: {similarity_params: {top_k: 5}}}\nruntime: {offline: true}\n"
    )
    return path


def test_validate_warns_of_missing_weights_of_any_target(tmp_path, capsys):
    recipe = _synth_recipe(tmp_path, (
        "target:\n  name: timm\n  layers: [layer4, fc]\n"
        f"  params: {{model: resnet10t, num_classes: 3, input_size: [3, 32, 32], checkpoint: '{tmp_path / 'w.pth'}'}}\n"
    ))
    assert main(["validate", str(recipe)]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "target 'timm'" in err and "w.pth" in err and "not found" in err and "r.yaml:" in err
    assert main(["layers", str(recipe)]) == 0
    assert "2 selected" in capsys.readouterr().out


def test_validate_warns_of_missing_pretrained_weights_and_lists_layers(tmp_path, capsys, monkeypatch):
    """Pretrained tags not in the local caches are warnings (offline: the run would fail); the
    layers come from the architecture alone."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    recipe = _synth_recipe(tmp_path, (
        "targets:\n"
        "  - {name: timm, params: {model: resnet10t, pretrained: true, input_size: [3, 32, 32]}, layers: [fc]}\n"
        "  - {name: torchvision, params: {model: resnet18, weights: DEFAULT}, layers: [layer4]}\n"
    ))
    assert main(["validate", str(recipe)]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "timm model 'resnet10t' are not available locally and offline mode is on" in err
    assert "hf download timm/resnet10t" in err
    assert "ResNet18_Weights.IMAGENET1K_V1 are not in the torch hub cache" in err
    assert "not checked" not in err
    assert main(["layers", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert out.count("1 selected") == 2 and "target 'torchvision'" in out
    assert "512x7x7" in out  # resnet18's layer4 at the weights' 224 crop
    # the same weights cached: no warning
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert main(["validate", str(recipe)]) == 0
    assert "torch hub cache" not in capsys.readouterr().err


def test_resolve_reads_each_weights_file_once(count_weights):
    """synth-clip is read at resolve; the target's file only when its module is first used (a run
    whose activations are cached never reads it); each file is hashed once however often the cache
    keys ask for fingerprints."""
    from dissectkit.engine import resolve

    res = resolve(dk.load_recipe(QUICKSTART, ["runtime.device=cpu"]))
    for _ in range(3):  # cache keys ask for fingerprints per layer and chunk
        for slot in res.targets.values():
            slot.instance.fingerprint()
        for d in res.dissectors.values():
            d.fingerprint()
    files = {k: Path(v).name for k, v in arch.read_config()["files"].items()}
    both = {files["synth-clip"]: 1, files["synth-effnet-concepts"]: 1}
    assert count_weights == {"load": {files["synth-clip"]: 1}, "hash": both}
    target = res.targets["synth-effnet-concepts"].instance
    assert not target.module.training and target.module is target.module
    assert count_weights == {"load": both, "hash": both}


@pytest.mark.slow
def test_a_cached_rerun_never_builds_the_target(tmp_path):
    """The second run of a recipe finds every activation chunk cached: the target's weights are not
    read (and timm is imported by neither run: the synthetic targets run as TinyNetE); its labels
    are the first run's."""
    code = (
        "import json, sys\nimport dissectkit as dk\nfrom dissectkit.base import weights\nfrom dissectkit.engine import run\n"
        "loads = []\nreal = weights.load_checkpoint\n"
        "weights.load_checkpoint = lambda p, *a, **k: loads.append(str(p)) or real(p, *a, **k)\n"
        f"rec = dk.load_recipe({str(QUICKSTART)!r}, ['probe.params.n=24', 'runtime.batch_size=12', 'output.reporters=[csv]',"
        " 'method.params={similarity: soft_wpmi, similarity_params: {top_k: 5}}',"
        f" 'runtime.device=cpu', 'output.dir={tmp_path / 'out'}'])\n"
        "result = run(rec)\n"
        "print(json.dumps({'timm': 'timm' in sys.modules, 'loads': sorted(loads)}))\n"
    )
    env = {**os.environ, "DISSECTKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    labels = (tmp_path / "out" / "labels.json").read_bytes()
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    files = arch.read_config()["files"]
    runs = [json.loads(p.stdout.strip().splitlines()[-1]) for p in (first, second)]
    assert any(files["synth-effnet-concepts"] in p for p in runs[0]["loads"])  # timm is never imported: TinyNetE
    assert not runs[0]["timm"]
    assert not runs[1]["timm"] and not any(files["synth-effnet-concepts"] in p for p in runs[1]["loads"])
    assert (tmp_path / "out" / "labels.json").read_bytes() == labels


def test_synth_target_checks_its_file_before_reading_it(tmp_path, count_weights):
    """Resolve refuses a wrong or unreadable synth-effnet file from its header alone."""
    garbage = _world_copy(tmp_path)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        dk.create("target", "synth-effnet-concepts", _ctx=CTX, weights={"path": str(garbage)})
    general = arch.WEIGHTS_DIR / arch.read_config()["files"]["synth-effnet-general"]
    with pytest.raises(WeightsError, match=r"classifier: checkpoint .*\(8, 1280\).* vs model .*\(20, 1280\)"):
        dk.create("target", "synth-effnet-concepts", _ctx=CTX, weights={"path": str(general)})
    assert count_weights["load"] == {}
