"""synth-clip and the synth-effnet targets: committed weights, contracts, zero-shot quality, training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import ComponentError, WeightsError
from dissectkit.synthetic import vocab
from dissectkit.synthetic.models import MODEL_INPUT, WEIGHTS_DIR, read_config

CTX = BuildContext(device="cpu", offline=True)
CONCEPTS_AUC_FLOOR = 0.85  # committed weights (held-out 0.9+): see docs/synthetic.md for the measured figures


@pytest.fixture(scope="module")
def clip():
    return dk.create("dissector", "synth-clip", _ctx=CTX)


def test_committed_weights_are_small_safetensors():
    cfg = read_config()
    total = 0
    for name, file in cfg["files"].items():
        path = WEIGHTS_DIR / file
        assert path.suffix == ".safetensors" and path.exists(), name
        total += path.stat().st_size
    assert total < 12 * 2**20
    assert cfg["concept_classes"] == list(vocab.CONCEPT_CLASSES)


def test_clip_contract(clip):
    assert clip.embed_dim == 128
    arr = (np.random.default_rng(0).random((320, 192)) * 255).astype(np.uint8)
    inputs = [arr, arr.astype(np.uint16) * 257, arr.astype(np.float32) / 255.0, np.repeat(arr[:, :, None], 3, 2),
              Image.fromarray(arr), Image.fromarray(arr).convert("RGB")]
    xs = [clip.preprocess(x) for x in inputs]
    for x in xs:
        assert x.shape == (3, *MODEL_INPUT) and x.dtype == torch.float32
        assert torch.allclose(x, xs[0], atol=1e-2)
    emb = clip.encode_images(torch.stack(xs[:2]))
    assert emb.shape == (2, 128) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    txt = clip.encode_texts(["round mass", "", "zzqx unknownword ☃", "a" * 300])
    assert txt.shape == (4, 128) and torch.isfinite(txt).all()
    assert torch.allclose(txt.norm(dim=1), torch.ones(4), atol=1e-5)
    assert clip.fingerprint() == dk.create("dissector", "synth-clip", _ctx=CTX).fingerprint()


def _zero_shot_aucs(clip, n: int = 300, seed: int = 123) -> list[float]:
    from dissectkit.synthetic.training import auc, concept_targets

    probe = dk.create("probe", "synth-mammo", n=n, seed=seed)
    items = [probe[i] for i in range(len(probe))]
    x = torch.stack([clip.preprocess(it.image) for it in items])
    sims = (clip.encode_images(x) @ clip.encode_texts(list(vocab.CONCEPT_CLASSES)).T).numpy()
    y = np.array([concept_targets(it.labels) for it in items])
    return [auc(sims[:, j], y[:, j]) for j in range(len(vocab.CONCEPT_CLASSES))]


@pytest.mark.slow
def test_zero_shot_auc_on_a_fresh_sample(clip):
    """Zero-shot AUC on images the model never saw (probe seed 123): composition and the large
    findings are near perfect, every finding is well above chance."""
    aucs = dict(zip(vocab.CONCEPT_CLASSES, _zero_shot_aucs(clip), strict=True))
    for c in (*vocab.COMPOSITIONS, "breast implant", "skin thickening", "nipple retraction"):
        assert aucs[c] > 0.95, (c, aucs[c])
    assert min(aucs[f] for f in vocab.FINDINGS) > 0.6, aucs


@pytest.mark.slow
def test_zero_shot_acceptance_bar(clip):
    """The issue's bar: mean zero-shot AUC over the 16 findings of at least 0.85 (fresh images)."""
    aucs = _zero_shot_aucs(clip)[: len(vocab.FINDINGS)]
    assert np.nanmean(aucs) >= 0.85, dict(zip(vocab.FINDINGS, np.round(aucs, 3), strict=True))


def test_targets_contract():
    names = {}
    for name in ("synth-effnet-concepts", "synth-effnet-malignancy", "synth-effnet-general"):
        t = dk.create("target", name, _ctx=CTX)
        assert not t.module.training
        layers = {i.name: i for i in t.layers()}
        assert {"blocks.0", "blocks.6", "conv_head", "classifier"} <= set(layers)
        names[name] = layers["classifier"].n_neurons
        x = t.preprocess((np.random.default_rng(1).random((320, 192)) * 255).astype(np.uint8))
        assert x.shape == (3, *MODEL_INPUT)
        with torch.no_grad():
            assert t.module(x[None]).shape == (1, names[name])
        assert t.ground_truth("blocks.3") is None
    assert names == {"synth-effnet-concepts": 20, "synth-effnet-malignancy": 1, "synth-effnet-general": 8}
    concepts = dk.create("target", "synth-effnet-concepts", _ctx=CTX)
    assert concepts.ground_truth("classifier") == list(vocab.CONCEPT_CLASSES)
    assert dk.create("target", "synth-effnet-malignancy", _ctx=CTX).ground_truth("classifier") is None


def test_concepts_target_detects_findings():
    """The classifier's output neurons rank images with their finding first (held-out seed 77)."""
    from dissectkit.synthetic.training import auc, concept_targets

    t = dk.create("target", "synth-effnet-concepts", _ctx=CTX)
    probe = dk.create("probe", "synth-mammo", n=200, seed=77)
    items = [probe[i] for i in range(len(probe))]
    with torch.no_grad():
        out = t.module(torch.stack([t.preprocess(it.image) for it in items])).numpy()
    y = np.array([concept_targets(it.labels) for it in items])
    aucs = [auc(out[:, j], y[:, j]) for j in range(y.shape[1])]
    assert np.nanmean(aucs) > CONCEPTS_AUC_FLOOR


def test_weights_override_and_errors(tmp_path):
    cfg = read_config()
    for f in [*cfg["files"].values(), "synth_world.json"]:
        shutil.copy(WEIGHTS_DIR / f, tmp_path / f)
    t = dk.create("target", "synth-effnet-concepts", _ctx=CTX, weights={"path": str(tmp_path / cfg["files"]["synth-effnet-concepts"])})
    ref = dk.create("target", "synth-effnet-concepts", _ctx=CTX)
    assert t.fingerprint() == ref.fingerprint()
    with pytest.raises(WeightsError, match="not found"):
        dk.create("target", "synth-effnet-concepts", _ctx=CTX, weights={"path": str(tmp_path / "missing.safetensors")})
    # a file of another architecture is refused with the mismatching keys named
    with pytest.raises(WeightsError, match="classifier"):
        dk.create("target", "synth-effnet-concepts", _ctx=CTX, weights={"path": str(tmp_path / cfg["files"]["synth-effnet-general"])})
    with pytest.raises(ComponentError, match="unknown parameter"):
        dk.create("dissector", "synth-clip", _ctx=CTX, checkpoint="x")


@pytest.mark.slow
def test_train_command_at_tiny_size(tmp_path):
    from typer.testing import CliRunner

    from dissectkit.cli.app import app

    out = tmp_path / "w"
    res = CliRunner().invoke(app, ["synth", "train", "--quick", "--seed", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "synth_world.json").read_text())
    assert cfg["train"]["seed"] == 1 and cfg["train"]["n_train"] == 48
    assert set(cfg["heldout"]["zero_shot_auc"]) == set(vocab.CONCEPT_CLASSES)
    clip = dk.create("dissector", "synth-clip", _ctx=CTX, weights={"path": str(out / "synth_clip.safetensors")})
    assert clip.encode_texts(["mass"]).shape == (1, 128)
    t = dk.create("target", "synth-effnet-general", _ctx=CTX, weights={"path": str(out / "synth_effnet_general.safetensors")})
    assert t.ground_truth("classifier") == cfg["general_classes"]
    # the same seed writes the same weights
    out2 = tmp_path / "w2"
    assert CliRunner().invoke(app, ["synth", "train", "--quick", "--seed", "1", "--out", str(out2)]).exit_code == 0
    for f in cfg["files"].values():
        assert (out / f).read_bytes() == (out2 / f).read_bytes(), f


def test_grid_masks_mark_the_cells_each_finding_touches():
    from dissectkit.synthetic.generator import SynthMammoGenerator
    from dissectkit.synthetic.training import MASK_GRID, _grid_masks

    gen = SynthMammoGenerator(seed=4)
    for i in range(12):
        smp = gen.sample(i)
        grid = _grid_masks(smp.masks)
        assert grid.shape == (len(vocab.FINDINGS), *MASK_GRID)
        pooled = torch.nn.functional.adaptive_max_pool2d(
            torch.stack([torch.from_numpy(smp.masks.get(f, np.zeros(smp.image.shape, bool))).float() for f in vocab.FINDINGS]),
            MASK_GRID,
        )
        assert np.array_equal(grid, pooled.bool().numpy())
        assert [bool(grid[j].any()) for j in range(len(vocab.FINDINGS))] == [bool(smp.labels[f]) for f in vocab.FINDINGS]


@pytest.mark.slow
def test_training_set_does_not_depend_on_the_number_of_workers():
    from dissectkit.synthetic.training import make_mammo_set

    one, two = make_mammo_set(3, 130, workers=1), make_mammo_set(3, 130, workers=2)
    assert torch.equal(one.x, two.x) and torch.equal(one.masks, two.masks) and torch.equal(one.y, two.y)
    assert one.x.shape == (130, 1, *MODEL_INPUT) and one.masks.dtype == torch.bool
    assert [s.labels for s in one.samples] == [s.labels for s in two.samples]


def test_tokenizer_follows_the_weights_config():
    from dissectkit.synthetic.models import CLIP_CONFIG, build_tokenizer

    assert build_tokenizer(CLIP_CONFIG).ngrams == tuple(CLIP_CONFIG["ngrams"])
    old = {k: v for k, v in CLIP_CONFIG.items() if k != "ngrams"}  # configs written before "ngrams"
    assert build_tokenizer(old).ngrams == (3, 4, 5)
    assert read_config()["clip"]["ngrams"] == CLIP_CONFIG["ngrams"]


def test_clip_fingerprint_follows_its_config(tmp_path):
    """Same weights with another tokenizer config embed texts differently: the cache key must change."""
    cfg = read_config()
    shutil.copy(WEIGHTS_DIR / cfg["files"]["synth-clip"], tmp_path / "synth_clip.safetensors")
    (tmp_path / "synth_world.json").write_text(json.dumps(cfg))
    ref = dk.create("dissector", "synth-clip", _ctx=CTX, weights={"path": str(tmp_path / "synth_clip.safetensors")})
    cfg["clip"]["ngrams"] = [3, 4, 5]
    (tmp_path / "synth_world.json").write_text(json.dumps(cfg))
    other = dk.create("dissector", "synth-clip", _ctx=CTX, weights={"path": str(tmp_path / "synth_clip.safetensors")})
    assert other.fingerprint() != ref.fingerprint()
    assert not torch.allclose(other.encode_texts(["spiculated margin"]), ref.encode_texts(["spiculated margin"]))


@pytest.mark.parametrize("name", ["synth-effnet-concepts", "synth-effnet-malignancy"])
def test_tinynet_computes_what_timm_tinynet_e_does(name):
    """The targets run as models.TinyNetE (no timm import): same parameter names, and with the packaged
    weights the same outputs and hooked layer outputs as timm's tinynet_e (issue 22)."""
    pytest.importorskip("timm")
    from dissectkit.synthetic import arch, models

    classes = arch.target_classes(name, arch.read_config())
    n_out = arch.n_outputs(classes)
    ours, theirs = models.build_tinynet(n_out).eval(), models.build_effnet(n_out).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    path = arch.packaged_ref(name)["path"]
    models.load_weights_into(ours, path, name)
    models.load_weights_into(theirs, path, name)
    layers = ["blocks.1", "blocks.5", "conv_head", "classifier"]
    seen: dict[str, dict[str, torch.Tensor]] = {"ours": {}, "theirs": {}}
    for tag, net in (("ours", ours), ("theirs", theirs)):
        named = dict(net.named_modules())
        for layer in layers:
            named[layer].register_forward_hook(lambda _m, _i, out, tag=tag, layer=layer: seen[tag].__setitem__(layer, out))
    x = torch.randn(3, 3, *MODEL_INPUT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=1e-4)
    for layer in layers:
        assert torch.allclose(seen["ours"][layer], seen["theirs"][layer], atol=1e-5, rtol=1e-4), layer


def test_a_synthetic_run_imports_no_timm(tmp_path):
    """The quickstart's extraction builds its target without timm (nor torchvision, torch._dynamo)."""
    import subprocess
    import sys

    code = (
        "import sys, dissectkit as dk\n"
        f"rec = dk.load_recipe({str(dk.__file__).rsplit('/dissectkit/', 1)[0] + '/recipes/quickstart.yaml'!r}, "
        f"['probe.params.n=40', 'runtime.batch_size=20', 'method.params.similarity=cos', 'runtime.num_workers=0', 'output.reporters=[csv]', "
        f"'output.dir={tmp_path / 'out'}', 'runtime.cache_dir={tmp_path / 'cache'}'])\n"
        "dk.run(rec)\n"
        "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
