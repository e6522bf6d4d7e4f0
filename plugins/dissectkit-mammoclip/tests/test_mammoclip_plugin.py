"""Mammo-CLIP loader tests on checkpoints with the released container and key layout (random weights)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.plugin import BuildContext, ComponentError, WeightsError
from dissectkit.testing import check_dissector, check_target, write_wordpiece_tokenizer

MEAN, STD = 0.3089279, 0.25053555408335154  # the published constants, to the last digit
WORDS = "mass calcification benign malignant spiculated round oval breast density dense fatty normal tissue a in the of"
SIZE = (64, 48)


def efficientnet_sd(name: str, seed: int) -> dict[str, torch.Tensor]:
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(seed)
    net = EfficientNet.from_name(name)
    sd = {}
    for k, v in net.state_dict().items():
        if k.startswith("_fc."):
            continue  # the released encoder has no classifier
        if k.endswith("running_mean"):
            v = torch.randn_like(v) * 0.1
        elif k.endswith("running_var"):
            v = torch.rand_like(v) + 0.5
        sd[k] = v
    return sd


def bert_sd(vocab: int, seed: int) -> dict[str, torch.Tensor]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                     intermediate_size=96, max_position_embeddings=300, type_vocab_size=2)
    return BertModel(cfg).state_dict()


def pretrained_container(vocab: int, variant: str = "b2", config_name: str | None = None) -> dict:
    name, width = {"b2": ("efficientnet-b2", 1408), "b5": ("efficientnet-b5", 2048)}[variant]
    torch.manual_seed(3)
    sd = {f"image_encoder.{k}": v for k, v in efficientnet_sd(name, 1).items()}
    sd.update({f"text_encoder.text_encoder.{k}": v for k, v in bert_sd(vocab, 2).items()})
    sd["text_encoder.text_encoder.embeddings.position_ids"] = torch.arange(300)[None]
    sd["image_projection.projection.weight"] = torch.randn(512, width) * 0.02
    sd["image_projection.projection.bias"] = torch.randn(512) * 0.02
    sd["text_projection.projection.weight"] = torch.randn(512, 64) * 0.02
    sd["text_projection.projection.bias"] = torch.randn(512) * 0.02
    sd["logit_scale"] = torch.tensor(2.659)
    cfg_name = config_name or {"b2": "tf_efficientnetv2-detect", "b5": "tf_efficientnet_b5_ns-detect"}[variant]
    return {
        "model": sd,
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1]}]},
        "scheduler": {"last_epoch": 10, "base_lrs": [5e-5]},
        "config": {"model": {"image_encoder": {"name": cfg_name}, "text_encoder": {
            "name": "emilyalsentzer/Bio_ClinicalBERT", "pooling": "eos"},
            "projection_head": {"name": "linear", "proj_dim": 512}, "temperature": 0.07}},
        "epoch": 10,
        "train_loss": np.float64(1.234),  # a numpy scalar: weights_only=True refuses the file
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mammoclip")
    tok_dir, vocab = write_wordpiece_tokenizer(root / "tokenizer", WORDS)
    container = pretrained_container(vocab)
    path = root / "b2-model-best-epoch-10.tar"
    torch.save(container, path)
    ctx = BuildContext(device="cpu", offline=True, cache_dir=root / "cache")
    dis = dk.create("dissector", "mammo-clip", _ctx=ctx, weights={"path": str(path)}, tokenizer=str(tok_dir),
                    trust_checkpoint=True, image_size=list(SIZE))
    return {"root": root, "tok": tok_dir, "vocab": vocab, "sd": container["model"], "path": path, "ctx": ctx,
            "dis": dis, "container": container}


def copy_container(setup, config_name: str | None = None) -> dict:
    """The fixture's container with its own state dict (keys may be added / removed / replaced)."""
    container = dict(setup["container"], model=dict(setup["container"]["model"]))
    if config_name:
        container["config"] = {"model": {"image_encoder": {"name": config_name}}}
    return container


def direct_image(sd, images: list[np.ndarray]) -> torch.Tensor:
    from efficientnet_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-b2")
    del net._fc
    net.load_state_dict({k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")})
    net.eval()
    xs = []
    for img in images:
        rgb = np.repeat(img[:, :, None], 3, axis=2).astype(np.float64)
        rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
        xs.append(torch.tensor((rgb - MEAN) / STD, dtype=torch.float32).permute(2, 0, 1))
    with torch.no_grad():
        feats = net.extract_features(torch.stack(xs)).mean(dim=(2, 3))
        out = feats @ sd["image_projection.projection.weight"].T + sd["image_projection.projection.bias"]
    return out / out.norm(dim=-1, keepdim=True)


def direct_text(setup, texts: list[str]) -> torch.Tensor:
    from transformers import BertConfig, BertModel, BertTokenizer

    sd = setup["sd"]
    tok = BertTokenizer(str(setup["tok"] / "vocab.txt"), do_lower_case=True)
    bert = BertModel(BertConfig(vocab_size=setup["vocab"], hidden_size=64, num_hidden_layers=2, num_attention_heads=1,
                                intermediate_size=96, max_position_embeddings=300, type_vocab_size=2)).eval()
    prefix = "text_encoder.text_encoder."
    bert.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=False)
    rows = []
    with torch.no_grad():
        for t in texts:  # one at a time: no padding at all, EOS = the last token ([SEP])
            ids = tok(t, return_tensors="pt")
            h = bert(**ids).last_hidden_state[0, -1]
            rows.append(h @ sd["text_projection.projection.weight"].T + sd["text_projection.projection.bias"])
    out = torch.stack(rows)
    return out / out.norm(dim=-1, keepdim=True)


def test_embeddings_match_direct_computation(setup):
    dis = setup["dis"]
    assert dis.variant == "b2" and dis.embed_dim == 512
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, SIZE, dtype=np.uint8) for _ in range(3)]
    got = dis.encode_images(torch.stack([dis.preprocess(i) for i in images]))
    assert torch.allclose(got, direct_image(setup["sd"], images), atol=1e-5)
    texts = ["mass", "a spiculated mass in the breast", "round benign calcification"]
    assert torch.allclose(dis.encode_texts(texts), direct_text(setup, texts), atol=1e-5)


def test_check_dissector_and_preprocessing(setup):
    dis = setup["dis"]
    report = check_dissector(dis)
    assert report["batch_vs_single_texts"] <= 1e-5
    big = np.arange(130 * 90, dtype=np.uint16).reshape(130, 90)
    x = dis.preprocess(big)
    assert tuple(x.shape) == (3, *SIZE)
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert lo - 1e-5 <= x.min().item() < lo + 0.05 and hi - 0.05 < x.max().item() <= hi + 1e-5
    exact = dis.preprocess(big[: SIZE[0], : SIZE[1]])  # already the configured size: no resize
    assert exact.min().item() == pytest.approx(lo, abs=1e-5) and exact.max().item() == pytest.approx(hi, abs=1e-5)
    assert torch.equal(exact[0], exact[2])  # grey read as RGB: three equal channels


def test_untrusted_pickle_is_refused(setup):
    with pytest.raises(WeightsError, match="trust_checkpoint: true"):
        dk.create("dissector", "mammo-clip", _ctx=setup["ctx"], weights={"path": str(setup["path"])},
                  tokenizer=str(setup["tok"]), image_size=list(SIZE))


@pytest.mark.parametrize("change, expect", [
    ("missing", "missing keys: image_encoder._blocks.3._depthwise_conv.weight"),
    ("extra", "unexpected keys: text_projection.extra"),
    ("shape", "mis-shaped keys: image_encoder._bn1.weight"),
])
def test_mismatched_checkpoint_names_the_keys(setup, tmp_path, change, expect):
    container = copy_container(setup)
    sd = container["model"]
    if change == "missing":
        del sd["image_encoder._blocks.3._depthwise_conv.weight"]
        expect = "missing keys: image_encoder._blocks.3._depthwise_conv.weight"
    if change == "extra":
        sd["text_projection.extra"] = torch.zeros(3)
    if change == "shape":
        sd["image_encoder._bn1.weight"] = torch.zeros(7)
    path = tmp_path / "bad.tar"
    torch.save(container, path)
    with pytest.raises(WeightsError, match=expect.replace(".", r"\.")):
        dk.create("dissector", "mammo-clip", _ctx=setup["ctx"], weights={"path": str(path)},
                  tokenizer=str(setup["tok"]), trust_checkpoint=True, image_size=list(SIZE))


def test_config_and_shapes_must_agree(setup, tmp_path):
    container = copy_container(setup, config_name="tf_efficientnet_b5_ns-detect")
    path = tmp_path / "mixed.tar"
    torch.save(container, path)
    with pytest.raises(WeightsError, match="says b5 but its weights have the shapes of b2"):
        dk.create("dissector", "mammo-clip", _ctx=setup["ctx"], weights=str(path), tokenizer=str(setup["tok"]),
                  trust_checkpoint=True)


def test_offline_missing_hub_file_names_it_without_network(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsError) as err:
        dk.create("dissector", "mammo-clip", _ctx=BuildContext(offline=True, cache_dir=tmp_path / "c"),
                  weights={"hf": "shawn24/Mammo-CLIP", "file": "Pre-trained-checkpoints/b5-model-best-epoch-7.tar"},
                  trust_checkpoint=True)
    msg = str(err.value)
    assert "b5-model-best-epoch-7.tar" in msg and "hf download shawn24/Mammo-CLIP" in msg


def test_missing_tokenizer_offline_is_clear(setup):
    with pytest.raises(WeightsError, match="hf download emilyalsentzer/Bio_ClinicalBERT"):
        dk.create("dissector", "mammo-clip", _ctx=setup["ctx"], weights=str(setup["path"]),
                  tokenizer="emilyalsentzer/Bio_ClinicalBERT-not-cached", trust_checkpoint=True)


def test_bad_params_are_named():
    with pytest.raises(ComponentError, match="variant"):
        dk.create("dissector", "mammo-clip", weights="x.tar", variant="b3")


B5_CHANNELS = [24] * 3 + [40] * 5 + [64] * 5 + [128] * 7 + [176] * 7 + [304] * 9 + [512] * 3
B2_CHANNELS = [16] * 2 + [24] * 3 + [48] * 3 + [88] * 4 + [120] * 4 + [208] * 5 + [352] * 2


def test_target_layers_without_weights(tmp_path):
    target = dk.create("target", "mammo-clip-image-encoder",
                       weights={"hf": "shawn24/Mammo-CLIP", "file": "Pre-trained-checkpoints/b5-model-best-epoch-7.tar"},
                       _ctx=BuildContext(offline=True, cache_dir=tmp_path))
    infos = target.layers()
    assert [i.name for i in infos] == [f"image_encoder._blocks.{i}" for i in range(39)]
    assert [i.n_neurons for i in infos] == B5_CHANNELS
    assert infos[-1].shape == (512, 48, 29)  # 1520 x 912 input, stride 32
    b2 = dk.create("target", "mammo-clip-classifier", weights=str(tmp_path / "missing_b2.pth"), n_class=4,
                   image_size=[512, 512])
    infos = b2.layers()
    assert [i.n_neurons for i in infos[:-1]] == B2_CHANNELS
    assert (infos[-1].name, infos[-1].n_neurons) == ("classifier.classification_head", 4)


def test_image_encoder_target_matches_dissector_encoder(setup):
    target = dk.create("target", "mammo-clip-image-encoder", _ctx=setup["ctx"], weights=str(setup["path"]),
                       trust_checkpoint=True, image_size=list(SIZE))
    x = torch.stack([target.preprocess(np.random.default_rng(i).random(SIZE)) for i in range(2)])
    with torch.no_grad():
        feats = target.module(x)
        want = setup["dis"].model.image_encoder.extract_features(x).mean(dim=(2, 3))
    assert torch.allclose(feats, want, atol=1e-5)
    assert target.module.get_submodule("image_encoder._blocks.22") is not None
    assert len(target.layers()) == 23 and target.fingerprint() == target.fingerprint()
    report = check_target(target, images=[np.random.default_rng(i).random(SIZE) for i in range(2)])
    assert report == {"layers": 23, "input": (3, *SIZE)}


def test_classifier_target_reads_head(setup, tmp_path):
    sd = {f"image_encoder.{k}": v for k, v in efficientnet_sd("efficientnet-b2", 5).items()}
    sd["classifier.classification_head.weight"] = torch.randn(4, 1408) * 0.05
    sd["classifier.classification_head.bias"] = torch.randn(4)
    path = tmp_path / "b2_density.pth"
    torch.save({"model": sd, "predictions": np.zeros((10, 4)), "epoch": 3, "auroc": 0.81}, path)
    target = dk.create("target", "mammo-clip-classifier", _ctx=setup["ctx"], weights=str(path), trust_checkpoint=True,
                       image_size=list(SIZE))
    infos = target.layers()
    assert infos[-1].n_neurons == 4 and len(infos) == 24
    assert check_target(target, images=[np.zeros(SIZE, dtype=np.uint8) + 7])["layers"] == 24
    x = target.preprocess(np.random.default_rng(0).integers(0, 255, SIZE, dtype=np.uint8))[None]
    with torch.no_grad():
        logits = target.module(x)
        feats = target.module.image_encoder.extract_features(x).mean(dim=(2, 3))
    assert torch.allclose(logits, feats @ sd["classifier.classification_head.weight"].T
                          + sd["classifier.classification_head.bias"], atol=1e-5)
    wrong = dk.create("target", "mammo-clip-classifier", _ctx=setup["ctx"], weights=str(path), trust_checkpoint=True,
                      n_class=5)
    with pytest.raises(WeightsError, match="n_class: 5"):
        wrong.module  # noqa: B018


# --------------------------------------------------------------------------- input parity
def published_png(stored: np.ndarray, monochrome1: bool) -> np.ndarray:
    """Mammo-CLIP's DICOM -> PNG conversion computed directly from its published description
    (../shared/docs/models.md), independently of dissectkit.imaging.mammo_png."""
    import cv2

    x = stored[5:-5, 5:-5].astype(np.float64)  # a 5-pixel border dropped on every side
    if monochrome1:
        x = x.max() - x
    u8 = ((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)
    t = u8.copy()
    t[t <= 40] = 0

    def longest(flags):
        runs, start = [], None
        for i, f in enumerate(list(flags) + [False]):
            if f and start is None:
                start = i
            elif not f and start is not None:
                runs.append((start, i))
                start = None
        # the published count: a run reaching the first or the last index counts one shorter per edge
        n = len(flags)
        counted = [(a, b, b - a - (a == 0) - (b == n)) for a, b in runs]
        best = max(c for _, _, c in counted)
        return [i for a, b, c in counted if c == best for i in range(a, b)]

    h, w = t.shape
    cols = longest(t[h // 2 - int(0.4 * h): h // 2 + int(0.4 * h), :].std(axis=0) != 0)
    t2 = t[:, cols]
    w2 = t2.shape[1]
    rows = longest(t2[:, w2 // 2 - int(0.4 * w2): w2 // 2 + int(0.4 * w2)].std(axis=1) != 0)
    return cv2.resize(u8[rows][:, cols], (912, 1520), interpolation=cv2.INTER_AREA)


def published_input(png: np.ndarray) -> torch.Tensor:
    """Mammo-CLIP's evaluation input from its PNG: RGB, min-max per image, (x - mean) / std."""
    rgb = np.repeat(png[:, :, None], 3, axis=2).astype(np.float64)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
    return torch.tensor((rgb - 0.3089279) / 0.25053555408335154, dtype=torch.float32).permute(2, 0, 1)


def phantom(h: int = 300, w: int = 200, seed: int = 0) -> np.ndarray:
    """A 12-bit MONOCHROME1-style mammogram: dark (high) background, a noisy breast, a bright label."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 3900 + rng.integers(0, 120, (h, w))  # MONOCHROME1: background is high
    inside = (xx / (0.7 * w)) ** 2 + ((yy - h / 2) / (0.42 * h)) ** 2 <= 1
    img[inside] = 900 + rng.integers(0, 1500, int(inside.sum()))
    img[20:30, w - 40: w - 15] = 0  # a burned-in label (white once inverted), outside the breast
    img[h - 40:, :] = 4095  # a collimator band: constant black rows once inverted
    return img.astype(np.uint16)


def write_mono1(path, pixels: np.ndarray):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "MG"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2000, 1500  # a window Mammo-CLIP's conversion ignores
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_normalisation_constants_are_the_published_ones():
    from dissectkit_mammoclip import model

    assert (model.MEAN, model.STD) == (0.3089279, 0.25053555408335154)


def test_mammo_clip_conversion_matches_the_published_description(setup, tmp_path):
    """DICOM layout: the probe reads the DICOM without VOI; the target / dissector with
    ``conversion: mammo-clip`` feed the model exactly what Mammo-CLIP's PNG + evaluation would."""
    from PIL import Image

    from dissectkit.cli.commands.data import convert_tree
    from dissectkit.plugin import mammo_clip_png, read_image

    stored = phantom()
    path = write_mono1(tmp_path / "dcm" / "m.dcm", stored)
    png = published_png(stored, monochrome1=True)
    want = published_input(png)
    kw = dict(_ctx=setup["ctx"], weights=str(setup["path"]), trust_checkpoint=True, conversion="mammo-clip")
    target = dk.create("target", "mammo-clip-image-encoder", **kw)
    dis = dk.create("dissector", "mammo-clip", tokenizer=str(setup["tok"]), **kw)
    raw = read_image(path, apply_voi=False)
    np.testing.assert_array_equal(mammo_clip_png(raw), png)  # the same PNG, bit for bit, from the probe's image
    for model in (target, dis):
        got = model.preprocess(raw)
        assert tuple(got.shape) == (3, 1520, 912)
        assert torch.allclose(got, want, rtol=0, atol=1e-6)  # float32 vs float64 rounding only
    # the breast box is the ExtractBreast one: the label and the collimator band are cut away
    assert png.shape == (1520, 912) and (png > 0).mean() > 0.5
    # `dissectkit data to-png` writes that PNG; the PNG layout (conversion: none) gives the same input
    assert convert_tree(tmp_path / "dcm", tmp_path / "png", workers=1, progress=False) == []
    written = np.asarray(Image.open(tmp_path / "png" / "m.png"))
    np.testing.assert_array_equal(written, png)
    plain = dk.create("target", "mammo-clip-image-encoder", _ctx=setup["ctx"], weights=str(setup["path"]),
                      trust_checkpoint=True)
    assert torch.allclose(plain.preprocess(read_image(tmp_path / "png" / "m.png")), want, rtol=0, atol=1e-6)
    assert plain.fingerprint() != target.fingerprint()
    # with the VOI window applied the input differs: the conversion is defined on the stored pixels
    assert float((target.preprocess(read_image(path)) - want).abs().max()) > 0.1


def test_8bit_and_12bit_dicom_give_the_same_input(setup, tmp_path):
    from dissectkit.plugin import read_image

    a8 = np.random.default_rng(3).integers(20, 250, SIZE).astype(np.uint8)
    px = np.rint(a8 * (4095 / 255)).astype(np.uint16)
    a12 = read_image(write_mono1(tmp_path / "a.dcm", 4095 - px), apply_voi=False)  # MONOCHROME1: inverted back
    kw = dict(_ctx=setup["ctx"], weights=str(setup["path"]), trust_checkpoint=True, image_size=list(SIZE))
    for model in (setup["dis"], dk.create("target", "mammo-clip-image-encoder", **kw),
                  dk.create("target", "mammo-clip-classifier", n_class=2, **kw)):
        diff = float((model.preprocess(a8) - model.preprocess(a12)).abs().max())
        assert diff <= 2e-3 / STD, diff
