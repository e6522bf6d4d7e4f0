"""The run engine end to end with tiny real models: cache, resume, streaming, skips, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_recipe, write_images

import dissectkit as dk
from dissectkit.cli import main


def _csv(out: Path) -> str:
    return (out / "neurons.csv").read_text()


@pytest.fixture
def recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file) -> Path:
    return tiny_recipe(tmp_path, tiny_openclip_dir, image_root, concepts_file)


def test_cli_run_writes_results_and_warm_run_reuses_the_cache(recipe, tmp_path, capsys):
    assert main(["run", str(recipe)]) == 0
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["chunks"] == {"computed": 3, "total": 3}
    assert manifest["stats"]["versions"]["device"] == "cpu" and manifest["stats"]["n_images"] == 24
    assert (out / "recipe.yaml").exists()
    rows = json.loads((out / "neurons.json").read_text())
    labels = json.loads((out / "labels.json").read_text())
    layers = labels["label_sets"][0]["layers"]
    assert list(layers) == ["layer3", "layer4", "fc"]
    assert [len(layers[n]["neurons"]) for n in layers] == [256, 512, 5]
    assert len(rows) == 256 + 512 + 5
    assert {"layer", "unit", "label", "score", "method"} <= set(rows[0])
    assert all(r["method"] == "clip-dissect" for r in rows)
    first = _csv(out)
    printed = capsys.readouterr().out
    assert "layer4" in printed and "Results written to" in printed

    assert main(["run", str(recipe)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["chunks"] == {"computed": 0, "total": 3}
    assert _csv(out) == first  # same recipe + seed -> byte-identical tables


def test_chunking_does_not_change_the_numbers(recipe, tmp_path):
    a = dk.run(dk.load_recipe(recipe, ["runtime.chunk_images=5", f"output.dir={tmp_path / 'a'}"]))
    b = dk.run(dk.load_recipe(recipe, ["runtime.chunk_images=1000", "runtime.batch_size=24", f"output.dir={tmp_path / 'b'}"]))
    assert a.stats["chunks"]["total"] == 5 and b.stats["chunks"]["total"] == 1
    acts_a = a.activations("timm", "layer4")
    acts_b = b.activations("timm", "layer4")
    assert acts_a.shape == (24, 512)
    assert (acts_a - acts_b).abs().max() < 1e-4
    assert [ls.layers["fc"].top1() for ls in a.label_sets] == [ls.layers["fc"].top1() for ls in b.label_sets]


def test_pooling_mean_and_max_differ_and_match_a_direct_computation(recipe, tmp_path):
    import torch

    mean = dk.run(dk.load_recipe(recipe, [f"output.dir={tmp_path / 'm'}"]))
    mx = dk.run(dk.load_recipe(recipe, ["target.pool=max", f"output.dir={tmp_path / 'x'}"]))
    target = mean.targets["timm"]
    item = mean.probe[0]
    x = target.preprocess(item.image)[None]
    store = {}
    h = target.module.get_submodule("layer4").register_forward_hook(lambda m, i, o: store.setdefault("o", o))
    with torch.no_grad():
        target.module(x)
    h.remove()
    assert torch.allclose(mean.activations("timm", "layer4")[0], store["o"].mean(dim=(2, 3))[0], atol=1e-5)
    assert torch.allclose(mx.activations("timm", "layer4")[0], store["o"].amax(dim=(2, 3))[0], atol=1e-5)


def test_interrupted_run_resumes_to_the_same_output(tmp_path, tiny_openclip_dir, concepts_file):
    images = tmp_path / "many"
    write_images(images, 60)
    recipe = tiny_recipe(tmp_path, tiny_openclip_dir, images, concepts_file)
    env = {**os.environ, "DISSECTKIT_CACHE": str(tmp_path / "cache-killed")}
    args = [sys.executable, "-m", "dissectkit.cli", "run", str(recipe), "--quiet", "--set", "runtime.batch_size=5", "--set", "runtime.chunk_images=10"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    embeds_dir = tmp_path / "cache-killed" / "embeds"
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        # a chunk's embeddings are written after its activations: one finished chunk of 6
        done = len(list(embeds_dir.glob("*/chunk_*.safetensors"))) if embeds_dir.exists() else 0
        if done >= 1:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert 1 <= done < 6
    resumed = subprocess.run(args, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert 0 < manifest["stats"]["chunks"]["computed"] < 6
    resumed_csv = _csv(tmp_path / "out")

    env["DISSECTKIT_CACHE"] = str(tmp_path / "cache-clean")
    clean = subprocess.run(args, env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    assert _csv(tmp_path / "out") == resumed_csv


def test_corrupt_image_is_skipped_and_counted_or_fatal_when_strict(recipe, image_root, tmp_path, capsys):
    (image_root / "a" / "broken.png").write_bytes(b"not a png at all")
    assert main(["run", str(recipe), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    skipped = manifest["stats"]["skipped"]
    assert len(skipped) == 1 and "broken.png" in next(iter(skipped.values()))
    assert "1 probe image(s) skipped" in capsys.readouterr().err
    assert main(["run", str(recipe), "--quiet", "--set", "runtime.strict_data=true", "--set", "runtime.cache_dir=" + str(tmp_path / "c2")]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "override, expected",
    [
        ("target.layers=[layer5]", "has no layer 'layer5'. Did you mean 'layer4'"),
        ("target.layers=['blocks.*']", "Layer pattern 'blocks.*' matches no layer"),
        ("target.params.checkpoint={path: /nonexistent/w.pth}", "file not found: /nonexistent/w.pth"),
        ("target.params.num_classes=many", "num_classes"),
        ("dissector.name=open-clp", "Did you mean 'open-clip'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(recipe, capsys, override, expected):
    assert main(["run", str(recipe), "--quiet", "--set", override]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert expected in err and "Traceback" not in err


def test_empty_probe_is_a_clear_error(recipe, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(recipe), "--quiet", "--set", f"probe.params.root={empty}"]) == 2
    assert str(empty) in capsys.readouterr().err.replace("\n", "")


def test_offline_with_an_uncached_hub_file_names_it_and_the_fetch_command(recipe, capsys):
    assert main(["run", str(recipe), "--quiet", "--set", "runtime.offline=true", "--set",
                 "target.params.checkpoint={hf: someone/missing-model, file: weights.safetensors}"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "someone/missing-model" in err and "hf download someone/missing-model weights.safetensors" in err


def test_several_methods_share_the_cached_evidence(recipe, tmp_path):
    result = dk.run(dk.load_recipe(recipe, ["methods=[{name: clip-dissect, params: {similarity: cos}}, {name: mammi, params: {template: 'a photo of {}'}}]"]))
    assert [ls.method for ls in result.label_sets] == ["clip-dissect", "mammi"]
    rows = json.loads((tmp_path / "out" / "neurons.json").read_text())
    assert {r["method"] for r in rows} == {"clip-dissect", "mammi"}


def test_vit_tokens_pooled_by_cls_or_patch_mean(recipe, tmp_path):
    import torch

    vit = "target={name: timm, params: {model: vit_tiny_patch16_224, kwargs: {img_size: 32, depth: 2}, input_size: [3, 32, 32]}, layers: [blocks.1]}"
    cls = dk.run(dk.load_recipe(recipe, [vit, f"output.dir={tmp_path / 'cls'}"]))
    mean = dk.run(dk.load_recipe(recipe, [vit, "target.token_pool=mean", f"output.dir={tmp_path / 'mean'}"]))
    assert cls.layer_infos["timm"][0].kind == "tokens"
    target = cls.targets["timm"]
    store = {}
    h = target.module.get_submodule("blocks.1").register_forward_hook(lambda m, i, o: store.setdefault("o", o))
    with torch.no_grad():
        target.module(target.preprocess(cls.probe[3].image)[None])
    h.remove()
    tokens = store["o"][0]  # [1 + 4 patches, 192]
    assert torch.allclose(cls.activations("timm", "blocks.1")[3], tokens[0], atol=1e-5)
    assert torch.allclose(mean.activations("timm", "blocks.1")[3], tokens[1:].mean(0), atol=1e-5)
