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
from support import assert_within_float16_step, tiny_recipe, write_images

import dissectkit as dk
from dissectkit.cli.app import main


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


@pytest.mark.slow
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


def test_strict_data_is_enforced_on_cached_chunks(recipe, image_root, tmp_path, capsys):
    (image_root / "a" / "broken.png").write_bytes(b"not a png at all")
    cache = "runtime.cache_dir=" + str(tmp_path / "shared-cache")
    assert main(["run", str(recipe), "--quiet", "--set", cache]) == 0  # skipped, cached
    capsys.readouterr()
    fresh = tmp_path / "fresh-cache"
    assert main(["run", str(recipe), "--quiet", "--set", "runtime.strict_data=true", "--set", f"runtime.cache_dir={fresh}"]) == 2
    fresh_err = capsys.readouterr().err
    assert main(["run", str(recipe), "--quiet", "--set", "runtime.strict_data=true", "--set", cache]) == 2
    cached_err = capsys.readouterr().err
    assert "broken.png" in cached_err and "Traceback" not in cached_err
    assert cached_err == fresh_err  # the same error whether the chunk was read now or cached


class _CountingProbe:
    """A probe of many items whose ``ids()`` counts its calls."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __len__(self) -> int:
        return self.n

    def ids(self) -> list[str]:
        self.calls += 1
        return [f"case/{i:05d}.png" for i in range(self.n)]


def test_probe_ids_come_from_one_ids_call():
    from dissectkit.base.contract import Probe, adapt
    from dissectkit.base.errors import DataError
    from dissectkit.engine import probe_ids

    class _Twice:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i):
            raise IndexError(i)

        def fingerprint(self) -> str:
            return "twice"

        def ids(self) -> list[str]:
            return ["a", "a"]

    probe = _CountingProbe(20_000)
    ids = probe_ids(probe)
    assert probe.calls == 1 and len(ids) == 20_000 and ids[12_345] == "case/12345.png"

    class NoIds(Probe):  # the base class's default: the indices
        def __len__(self) -> int:
            return 3

    assert probe_ids(NoIds()) == ["0", "1", "2"]
    with pytest.raises(DataError, match="same id to several images"):
        probe_ids(adapt("probe", _Twice()), "twice")

    class Short(_CountingProbe):
        def __len__(self) -> int:
            return self.n + 1

    with pytest.raises(DataError, match="returned 5 ids for 6 images"):
        probe_ids(Short(5), "short")


def test_threads_default_from_the_cpus_ranks_and_workers(recipe, tmp_path):
    import torch

    from dissectkit.engine.runtime import available_cpus, default_threads

    assert default_threads(local_ranks=1, num_workers=0, cpus=16) == 16
    assert default_threads(local_ranks=2, num_workers=1, cpus=16) == 7
    assert default_threads(local_ranks=4, num_workers=3, cpus=2) == 1
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)
    before = torch.get_num_threads()
    result = dk.run(dk.load_recipe(recipe, ["runtime.threads=3"]))
    assert result.stats["processes"] == {"world_size": 1, "threads": 3}
    assert torch.get_num_threads() == before  # restored after the run
    default = dk.run(dk.load_recipe(recipe, ["runtime.num_workers=0"]))
    assert default.stats["processes"]["threads"] == default_threads(1, 0)


SYNTH_NETDISSECT = """\
name: nd
dissectors: [{name: synth-clip}, {name: synth-clip}]
target: {name: synth-effnet-concepts, layers: [blocks.1, blocks.5, classifier]}
probe: {name: synth-mammo, params: {n: 24, seed: 0}}
concepts: {name: synth-mammo-concepts, params: {groups: [findings]}}
methods: [{name: netdissect, params: {quantile: 0.02, min_iou: 0.0}}, {name: clip-dissect, params: {similarity: cos}}]
output: {dir: OUT, reporters: [csv]}
runtime: {device: cpu, batch_size: 8, chunk_images: 10, offline: true, threads: 2}
"""


def test_spatial_evidence_is_cached_in_the_pass_and_netdissect_runs_once_per_layer(tmp_path, monkeypatch):
    import numpy as np
    import torch

    from dissectkit.builtin.methods.netdissect import NetDissect
    from dissectkit.engine.spatial import SPATIAL_MAX_SIDE, SpatialSource, align_masks, bounded_maps
    from dissectkit.nn.capture import Capture

    path = tmp_path / "nd.yaml"
    path.write_text(SYNTH_NETDISSECT.replace("OUT", str(tmp_path / "out")))
    calls: list[str] = []
    label = NetDissect.label
    monkeypatch.setattr(NetDissect, "label", lambda self, ev: calls.append(ev.layer) or label(self, ev))
    result = dk.run(dk.load_recipe(path))
    assert calls == ["blocks.1", "blocks.5", "classifier"]  # not once per dissector
    sets = {(ls.dissector, ls.method): ls for ls in result.label_sets}
    assert {d for d, _ in sets} == {"synth-clip-1", "synth-clip-2"}
    for layer in calls:
        assert sets[("synth-clip-1", "netdissect")].layers[layer].neurons == sets[("synth-clip-2", "netdissect")].layers[layer].neurons
    assert any(ranked for ranked in sets[("synth-clip-1", "netdissect")].layers["classifier"].neurons)

    keys = result.stats["cache"]
    assert set(keys["spatial"]) == {"synth-effnet-concepts/" + n for n in calls} and list(keys["masks"]) == ["synth-effnet-concepts"]
    cache = Path(os.environ["DISSECTKIT_CACHE"])
    from dissectkit.engine.cache import ChunkedEntry

    target = result.targets["synth-effnet-concepts"]
    for layer in ("blocks.1", "classifier"):
        maps = ChunkedEntry(cache / "spatial" / keys["spatial"]["synth-effnet-concepts/" + layer], 24, 10, "float16")
        masks = ChunkedEntry(cache / "masks" / keys["masks"]["synth-effnet-concepts"], 24, 10, "int64")
        values, _ = maps.read_chunk(0)
        assert values.dtype == torch.float16 and max(values.shape[-2:]) <= SPATIAL_MAX_SIDE
        valid = torch.ones(24, dtype=torch.bool)
        valid[[3, 17]] = False  # streamed in probe order, only the chosen images
        batches = list(SpatialSource(maps, masks, valid, batch_size=4)())
        streamed = torch.cat([b.maps for b in batches])
        streamed_masks = [m for b in batches for m in b.masks]
        keep = valid.nonzero().flatten().tolist()
        with Capture.named(target.module, [layer], lambda _n, out: bounded_maps(out)) as cap, torch.no_grad():
            target.module(torch.stack([target.preprocess(result.probe[i].image) for i in keep]))
        assert streamed.dtype == torch.float32 and cap.outputs[layer].dtype == torch.float16
        # the pass ran batches of 8 images, the capture one batch of 22: the float16 values agree to a step
        assert_within_float16_step(streamed, cap.outputs[layer])
        for i, got in zip(keep, streamed_masks, strict=True):
            want = align_masks(result.probe[i].masks, getattr(target, "preprocess_mask", None))
            assert (got is None) == (want is None)
            if want:
                assert got.keys() == want.keys() and all(np.array_equal(got[c], want[c]) for c in want)
    assert any(m for m in streamed_masks)

    calls.clear()
    again = dk.run(dk.load_recipe(path))
    assert again.stats["chunks"] == {"computed": 0, "total": 3}
    assert [ls.to_dict() for ls in again.label_sets] == [ls.to_dict() for ls in result.label_sets]
