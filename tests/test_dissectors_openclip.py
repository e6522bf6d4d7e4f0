"""open-clip dissector: a tiny registered config loaded from a file and from a local-dir, offline."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import ComponentError, WeightsError
from dissectkit.testing import check_dissector

CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PRE = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic", "resize_mode": "shortest"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("openclip")
    (root / "dk-tiny-clip.json").write_text(json.dumps(CFG))
    open_clip.add_model_config(root / "dk-tiny-clip.json")
    torch.manual_seed(0)
    model = open_clip.create_model("dk-tiny-clip").eval()
    torch.save(model.state_dict(), root / "tiny.pt")
    local = root / "local"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": CFG, "preprocess_cfg": PRE}))
    torch.save(model.state_dict(), local / "open_clip_pytorch_model.bin")
    ctx = BuildContext(offline=True, cache_dir=root / "cache")
    return {"root": root, "model": model, "ctx": ctx}


def direct(model, images, texts, mean, std):
    import open_clip

    xs = []
    for img in images:  # 40x32 RGB: shortest side already 32 -> centre crop 32x32 -> /255 -> normalise
        arr = img[4:36].astype(np.float32) / 255.0
        xs.append(torch.from_numpy((arr - np.array(mean, np.float32)) / np.array(std, np.float32)).permute(2, 0, 1))
    with torch.no_grad():
        img = model.encode_image(torch.stack(xs))
        txt = model.encode_text(open_clip.get_tokenizer("dk-tiny-clip")(texts))
    return torch.nn.functional.normalize(img, dim=-1), torch.nn.functional.normalize(txt, dim=-1), torch.stack(xs)


@pytest.mark.parametrize("how", ["file", "local-dir"])
def test_embeddings_match_open_clip(tiny, how):
    if how == "file":
        dis = dk.create("dissector", "open-clip", _ctx=tiny["ctx"], model="dk-tiny-clip", pretrained=str(tiny["root"] / "tiny.pt"))
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # open_clip defaults
    else:
        dis = dk.create("dissector", "open-clip", _ctx=tiny["ctx"], pretrained=f"local-dir:{tiny['root'] / 'local'}")
        mean, std = PRE["mean"], PRE["std"]
    assert dis.embed_dim == 24
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 32, 3), dtype=np.uint8) for _ in range(2)]
    texts = ["mass", "a calcification", "dense breast tissue"]
    want_img, want_txt, want_x = direct(tiny["model"], images, texts, mean, std)
    x = torch.stack([dis.preprocess(i) for i in images])
    assert torch.allclose(x, want_x, atol=1e-5)
    assert torch.allclose(dis.encode_images(want_x), want_img, atol=1e-5)
    got_txt = dis.encode_texts(texts)
    assert torch.allclose(got_txt, want_txt, atol=1e-5)
    assert (got_txt @ got_txt.T).fill_diagonal_(0).max() < 0.999  # different texts, different embeddings


def test_conformance_and_template(tiny):
    plain = dk.create("dissector", "open-clip", _ctx=tiny["ctx"], model="dk-tiny-clip", pretrained=str(tiny["root"] / "tiny.pt"))
    check_dissector(plain)
    templ = dk.create("dissector", "open-clip", _ctx=tiny["ctx"], model="dk-tiny-clip",
                      pretrained=str(tiny["root"] / "tiny.pt"), prompt_template="a mammogram showing {}.")
    assert torch.allclose(templ.encode_texts(["mass"]), plain.encode_texts(["a mammogram showing mass."]), atol=1e-6)
    assert templ.fingerprint() != plain.fingerprint()


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_offline_missing_weights_are_named(no_network, tmp_path):
    ctx = BuildContext(offline=True, cache_dir=tmp_path / "c")
    with pytest.raises(WeightsError, match=r"hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_pytorch_model\.bin"):
        dk.create("dissector", "open-clip", _ctx=ctx, model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(WeightsError, match=r"open_clip_config\.json.*hf download microsoft/BiomedCLIP"):
        dk.create("dissector", "open-clip", _ctx=ctx,
                  pretrained="hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    with pytest.raises(WeightsError, match="neither a known tag"):
        dk.create("dissector", "open-clip", _ctx=ctx, model="ViT-B-32", pretrained=str(tmp_path / "nope.pt"))


def test_bad_names_and_params(tiny, tmp_path):
    with pytest.raises(ComponentError, match="Did you mean 'ViT-B-32'"):
        dk.create("dissector", "open-clip", _ctx=tiny["ctx"], model="ViT-B-23", pretrained="openai")
    with pytest.raises(ComponentError, match="prompt_template"):
        dk.create("dissector", "open-clip", model="ViT-B-32", pretrained="openai", prompt_template="no slot")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": CFG}))
    with pytest.raises(WeightsError, match="no weights file"):
        dk.create("dissector", "open-clip", _ctx=tiny["ctx"], pretrained=f"local-dir:{empty}")


@pytest.mark.parametrize("change, expect", [
    ("missing", "text_projection"),
    ("extra", "extra.weight"),
    ("shape", "logit_scale"),
])
def test_mismatched_checkpoint_is_refused(tiny, tmp_path, change, expect):
    sd = dict(tiny["model"].state_dict())
    if change == "missing":
        sd.pop("text_projection")
    elif change == "extra":
        sd["extra.weight"] = torch.zeros(2)
    else:
        sd["logit_scale"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=expect):
        dk.create("dissector", "open-clip", _ctx=tiny["ctx"], model="dk-tiny-clip", pretrained=str(tmp_path / "bad.pt"))
