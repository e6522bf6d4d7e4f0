"""Targets: timm / torchvision / module / densenet121-cxr, checkpoint containers, layers, preprocessing."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import ComponentError, LayerError, WeightsError
from dissectkit.nn.layers import select_layers

CTX = BuildContext(device="cpu", offline=True)


def _timm(**kw):
    return dk.create("target", "timm", _ctx=CTX, **kw)


def _ref_model(seed=1):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("resnet10t", num_classes=3)


@pytest.mark.parametrize("container", ["plain", "state_dict", "model", "dataparallel"])
def test_timm_checkpoint_containers(tmp_path, container):
    ref = _ref_model()
    sd = ref.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd},
        "dataparallel": {f"module.{k}": v for k, v in sd.items()},
    }[container]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    t = _timm(model="resnet10t", num_classes=3, checkpoint={"path": str(path)})
    assert not t.module.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(t.module(x), ref.eval()(x))
    # the fingerprint is the file content: same weights in another container -> another hash only if bytes differ
    assert t.fingerprint() == _timm(model="resnet10t", num_classes=3, checkpoint=str(path)).fingerprint()


def test_timm_mismatch_report(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(_ref_model().state_dict(), path)
    with pytest.raises(WeightsError, match=r"mis-shaped keys: fc\.bias: checkpoint \(3,\) vs model \(5,\)"):
        _timm(model="resnet10t", num_classes=5, checkpoint=str(path))
    sd = _ref_model().state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["fc.bias"]
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing keys: fc\.bias; unexpected keys: extra\.weight"):
        _timm(model="resnet10t", num_classes=3, checkpoint=str(path))


def test_timm_pickle_needs_trust(tmp_path):
    path = tmp_path / "ckpt.tar"
    torch.save({"model": _ref_model().state_dict(), "config": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(WeightsError, match="trust_checkpoint"):
        _timm(model="resnet10t", num_classes=3, checkpoint=str(path))
    t = _timm(model="resnet10t", num_classes=3, checkpoint=str(path), trust_checkpoint=True)
    assert t.layers()[-1].n_neurons == 3


def test_timm_layers_preprocess_and_fingerprint():
    t = _timm(model="resnet18", num_classes=3, input_size=(3, 96, 96))
    infos = {i.name: i for i in t.layers()}
    assert infos["layer4"].shape == (512, 3, 3) and infos["layer4"].kind == "conv"
    assert infos["fc"].n_neurons == 3 and infos["fc"].kind == "linear"
    assert [i.name for i in select_layers(["layer[1-4]"], t.layers())] == ["layer1", "layer2", "layer3", "layer4"]
    with pytest.raises(LayerError, match="matches no layer"):
        select_layers(["_blocks.*"], t.layers())
    x = t.preprocess(np.random.default_rng(0).integers(0, 4096, (200, 150)).astype(np.uint16))
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32
    # seeded random init: same seed -> same weights/fingerprint; other seed -> other weights
    t2 = _timm(model="resnet18", num_classes=3, input_size=(3, 96, 96))
    torch.testing.assert_close(t.module.fc.weight, t2.module.fc.weight)
    assert t.fingerprint() != _timm(model="resnet34", num_classes=3).fingerprint()


def test_timm_vit_tokens():
    t = _timm(model="vit_tiny_patch16_224", kwargs={"img_size": 32, "depth": 2})
    infos = {i.name: i for i in t.layers()}
    assert infos["blocks.0"].kind == "tokens" and infos["blocks.0"].shape == (5, 192)
    assert infos["blocks.1"].n_neurons == 192


def test_timm_errors():
    with pytest.raises(ComponentError, match="Did you mean 'resnet18'"):
        _timm(model="resnet181")
    with pytest.raises(WeightsError, match="not available locally"):
        _timm(model="resnet18", pretrained=True)


def test_torchvision(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    ref = resnet18(num_classes=4)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pt")
    t = dk.create("target", "torchvision", _ctx=CTX, model="resnet18", num_classes=4, weights_file=str(tmp_path / "w.pt"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(t.module(x), ref.eval()(x))
    assert t.preprocess(np.zeros((300, 260, 3), np.uint8)).shape == (3, 224, 224)
    with pytest.raises(WeightsError, match="offline"):
        dk.create("target", "torchvision", _ctx=CTX, model="resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ComponentError, match="has no member"):
        dk.create("target", "torchvision", _ctx=CTX, model="resnet18", weights="IMAGENET9K")


def tiny_net(width: int = 4):
    """A factory used by the `module` target test."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(width, 2),
    )


def test_module_target(tmp_path):
    torch.manual_seed(0)
    ref = tiny_net(6)
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    t = dk.create("target", "module", _ctx=CTX, factory="test_targets:tiny_net", kwargs={"width": 6},
                  weights=str(tmp_path / "w.pt"), input_size=32, channels=1, mean=[0.5], std=[0.25])
    infos = {i.name: i for i in t.layers()}
    assert infos["0"] == dk.LayerInfo("0", 6, "conv", (6, 32, 32))
    x = t.preprocess(np.full((40, 40), 255, np.uint8))
    assert x.shape == (1, 32, 32) and torch.allclose(x, torch.full_like(x, 2.0))
    with pytest.raises(ComponentError, match="Did you mean 'tiny_net'"):
        dk.create("target", "module", _ctx=CTX, factory="test_targets:tiny_nte")
    with pytest.raises(ComponentError, match="package.module:callable"):
        dk.create("target", "module", _ctx=CTX, factory="test_targets.tiny_net")


def test_densenet121_cxr(tmp_path):
    from torchvision.models import densenet121

    torch.manual_seed(5)
    ref = densenet121(num_classes=14).eval()
    # a CheXNet-style container: module.densenet121.* keys, Linear+Sigmoid head, legacy norm.1 names
    sd = {}
    for k, v in ref.state_dict().items():
        k = k.replace("classifier.", "classifier.0.")
        k = k.replace(".norm1.", ".norm.1.").replace(".conv1.", ".conv.1.").replace(".norm2.", ".norm.2.").replace(".conv2.", ".conv.2.")
        sd[f"module.densenet121.{k}"] = v
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "chexnet.pth.tar")
    t = dk.create("target", "densenet121-cxr", _ctx=CTX, weights=str(tmp_path / "chexnet.pth.tar"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(t.module(x), ref(x))
    infos = {i.name: i for i in t.layers()}
    assert infos["features.relu5"].shape == (1024, 7, 7)
    assert infos["classifier"].n_neurons == 14
    gt = t.ground_truth("classifier")
    assert gt[0] == "atelectasis" and gt[12] == "pleural thickening" and len(gt) == 14
    assert t.ground_truth("features.relu5") is None
    # features.relu5 output == relu(norm5)
    feats = {}
    h = t.module.features.relu5.register_forward_hook(lambda m, i, o: feats.setdefault("o", o))
    with torch.no_grad():
        t.module(x)
    h.remove()
    torch.testing.assert_close(feats["o"], torch.relu(ref.features(x)))
    # masks follow the same resize 256 / centre crop 224: the top half (150 of 300 rows) -> 128 - 16 rows
    m = np.zeros((300, 300), bool)
    m[:150] = True
    pm = t.preprocess_mask(m)
    assert pm.shape == (224, 224) and pm.dtype == torch.bool
    assert pm[:, 0].sum() == 112 and pm[:112].all()
    # preprocessing: resize 256, crop 224, (x - 0.5056) / 0.252
    p = t.preprocess(np.full((300, 300), 128, np.uint8))
    assert p.shape == (3, 224, 224)
    assert torch.allclose(p, torch.full_like(p, (128 / 255 - 0.5056) / 0.252), atol=1e-5)


# -- layers metadata (validate / layers): the architecture without its weights ---------------------
class ItemNet(torch.nn.Module):
    """A module whose forward needs a tensor's value (``.item()``): no meta kernel, so the layers
    metadata must fall back to a CPU build."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
        self.head = torch.nn.Linear(width, 2)

    def forward(self, x):
        f = self.conv(x)
        scale = 1.0 + float(f.abs().amax().item() > 1e9)
        return self.head(f.mean(dim=(2, 3)) * scale)


def broken_net():
    """A factory whose forward fails on every device."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Linear(5, 2))


def _metadata_layers(name, **params):
    from dissectkit.host.manager import get_host

    spec = get_host().registry.get("target", name)
    return spec.layers(spec.validate(params), CTX)


@pytest.mark.parametrize("name, params", [
    ("timm", {"model": "resnet10t", "num_classes": 3, "input_size": [3, 64, 64]}),
    ("timm", {"model": "vit_tiny_patch16_224", "num_classes": 4, "kwargs": {"img_size": 32}}),
    ("timm", {"model": "tinynet_e", "num_classes": 2, "input_size": [3, 64, 48]}),
    ("torchvision", {"model": "resnet18", "num_classes": 5, "input_size": 64}),
    ("torchvision", {"model": "mobilenet_v3_small", "num_classes": 3, "input_size": 64}),
    ("module", {"factory": "test_targets:tiny_net", "kwargs": {"width": 6}, "input_size": 32, "channels": 1,
                "mean": [0.5], "std": [0.25]}),
    ("module", {"factory": "test_targets:ItemNet", "input_size": 16}),
    ("densenet121-cxr", {}),
])
def test_layers_metadata_equals_the_built_target(name, params):
    """What validate / layers list (meta device, no weights) is what the run hooks (built target)."""
    meta = _metadata_layers(name, **params)
    built = dk.create("target", name, _ctx=CTX, **params).layers()
    assert meta == built and len(meta) >= 2
    assert all(i.shape and i.n_neurons > 0 for i in meta)


def test_layers_metadata_reads_no_weights(tmp_path, monkeypatch):
    """A checkpoint that is absent, or present but not a checkpoint, does not stop the layers listing;
    no weights are resolved, loaded or hashed."""
    from dissectkit.base import weights

    def refuse(*a, **k):
        raise AssertionError("the layers metadata touched the weights")

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    expected = _timm(model="resnet10t", num_classes=3, input_size=[3, 64, 64]).layers()
    for name in ("resolve", "load_checkpoint", "file_fingerprint", "load_state_dict_strict"):
        monkeypatch.setattr(weights, name, refuse)
    for ckpt in (garbage, tmp_path / "absent.pth"):
        assert _metadata_layers("timm", model="resnet10t", num_classes=3, input_size=[3, 64, 64], checkpoint=str(ckpt)) == expected
    sizes = {i.name: i.n_neurons for i in _metadata_layers("densenet121-cxr", weights=str(tmp_path / "absent.pth"))}
    assert sizes["classifier"] == 14 and sizes["features.relu5"] == 1024
    assert _metadata_layers("torchvision", model="resnet18", num_classes=2, input_size=32,
                            weights_file=str(garbage))[-1] == dk.LayerInfo("fc", 2, "linear", (2,))


def test_torchvision_layers_metadata_follows_the_weights_enum():
    """The architecture the weights fit, without downloading them: ImageNet head, and the ViT
    built for the weights' 384 crop: (384 / 16)^2 patches + the class token."""
    infos = {i.name: i for i in _metadata_layers("torchvision", model="vit_b_16", weights="ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1")}
    assert infos["encoder.layers.encoder_layer_11"] == dk.LayerInfo("encoder.layers.encoder_layer_11", 768, "tokens", (577, 768))
    assert infos["heads.head"].n_neurons == 1000
    with pytest.raises(ComponentError, match="have 1000 classes, not num_classes 3"):
        _metadata_layers("torchvision", model="resnet18", weights="DEFAULT", num_classes=3)


def test_layers_metadata_errors():
    with torch.device("meta"), pytest.raises(RuntimeError):  # why ItemNet's layers come from the CPU fallback
        ItemNet()(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ComponentError, match="cannot be built and run on a zero image"):
        _metadata_layers("module", factory="test_targets:broken_net", input_size=8)
    with pytest.raises(ComponentError, match="timm has no model 'resnet1t'"):
        _metadata_layers("timm", model="resnet1t")
    with pytest.raises(ComponentError, match="has no member"):
        _metadata_layers("torchvision", model="resnet18", weights="ResNet18_Weights.IMAGENET2K")
