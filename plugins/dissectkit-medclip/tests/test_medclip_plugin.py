"""MedCLIP loader tests on pytorch_model.bin files with the released key layout (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import dissectkit as dk
from dissectkit.plugin import BuildContext, WeightsError
from dissectkit.testing import check_dissector, write_wordpiece_tokenizer

MEAN, STD = 0.5862786, 0.2795009
WORDS = "opacity effusion pneumonia cardiomegaly edema no normal left right lung pleural small large the of with"
SWIN = dict(embed_dim=24, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=7, image_size=224, patch_size=4)
BERT = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=1, intermediate_size=96,
            max_position_embeddings=128, type_vocab_size=2)


def text_part(vocab: int) -> dict[str, torch.Tensor]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(11)
    sd = {f"text_model.model.{k}": v for k, v in BertModel(BertConfig(vocab_size=vocab, **BERT)).state_dict().items()}
    sd["text_model.model.embeddings.position_ids"] = torch.arange(128)[None]
    sd["text_model.projection_head.weight"] = torch.randn(512, 64) * 0.05
    sd["logit_scale"] = torch.tensor(3.2)
    return sd


NEW_TO_OLD = (  # the released file was written by transformers 4.x: these are its Swin key names
    ("attention.q_proj.", "attention.self.query."),
    ("attention.k_proj.", "attention.self.key."),
    ("attention.v_proj.", "attention.self.value."),
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("attention.o_proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
)


def old_swin_name(key: str) -> str:
    for new, old in NEW_TO_OLD:
        key = key.replace(new, old)
    return key


def vit_sd(vocab: int) -> dict[str, torch.Tensor]:
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(7)
    swin = SwinModel(SwinConfig(**SWIN))
    sd = {f"vision_model.model.{old_swin_name(k)}": v for k, v in swin.state_dict().items()}
    for name, buf in swin.named_buffers():  # old transformers saved these index buffers too
        if name.endswith("relative_position_index"):
            sd[f"vision_model.model.{old_swin_name(name).replace('relative_position_bias.', 'self.')}"] = buf
    sd["vision_model.projection_head.weight"] = torch.randn(512, 192) * 0.05
    sd.update(text_part(vocab))
    return sd


def resnet_sd(vocab: int):
    from torchvision.models import resnet50

    torch.manual_seed(5)
    net = resnet50(weights=None)
    net.fc = torch.nn.Linear(2048, 512, bias=False)
    sd = {f"vision_model.model.{k}": v for k, v in net.state_dict().items()}
    sd.update(text_part(vocab))
    return sd, net.eval()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("medclip")
    tok, vocab = write_wordpiece_tokenizer(root / "tok", WORDS)
    (root / "vit").mkdir()
    sd = vit_sd(vocab)
    torch.save(sd, root / "vit" / "pytorch_model.bin")
    ctx = BuildContext(offline=True, cache_dir=root / "cache")
    dis = dk.create("dissector", "medclip", _ctx=ctx, weights={"path": str(root / "vit")}, tokenizer=str(tok))
    return {"root": root, "tok": tok, "vocab": vocab, "ctx": ctx, "sd": sd, "dis": dis}


def reference_pixels(img: np.ndarray) -> torch.Tensor:
    pil = Image.fromarray(img).convert("L")
    w, h = pil.size
    side = max(224, w, h)
    canvas = Image.new("L", (side, side), 0)
    canvas.paste(pil, ((side - w) // 2, (side - h) // 2))
    arr = np.asarray(canvas.resize((224, 224), Image.BICUBIC), dtype=np.float64) / 255.0
    return torch.tensor((arr - MEAN) / STD, dtype=torch.float32)[None].repeat(3, 1, 1)


def reference_text(env, texts):
    from transformers import BertConfig, BertModel, BertTokenizer

    sd = env["sd"]
    bert = BertModel(BertConfig(vocab_size=env["vocab"], **BERT)).eval()
    bert.load_state_dict({k[len("text_model.model."):]: v for k, v in sd.items() if k.startswith("text_model.model.")},
                         strict=False)
    tok = BertTokenizer(str(env["tok"] / "vocab.txt"))
    rows = []
    with torch.no_grad():
        for t in texts:  # one text at a time, as MedCLIP does: a plain mean over its tokens
            hs = bert(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states
            emb = torch.stack([hs[1], hs[2], hs[-1]]).mean(0).mean(1)[0]
            rows.append(emb @ sd["text_model.projection_head.weight"].T)
    out = torch.stack(rows)
    return out / out.norm(dim=-1, keepdim=True)


def test_vit_matches_direct_computation(env):
    from transformers import SwinConfig, SwinModel

    dis, sd = env["dis"], env["sd"]
    assert dis.variant == "vit" and dis.embed_dim == 512
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (300, 180), dtype=np.uint8), rng.integers(0, 256, (100, 120), dtype=np.uint8)]
    pix = torch.stack([dis.preprocess(i) for i in images])
    want_pix = torch.stack([reference_pixels(i) for i in images])
    assert torch.allclose(pix, want_pix, atol=1e-5)
    swin = SwinModel(SwinConfig(**SWIN)).eval()
    new_names = {old_swin_name(k): k for k in swin.state_dict()}
    swin.load_state_dict({new_names[k[len("vision_model.model."):]]: v for k, v in sd.items()
                          if k.startswith("vision_model.model.") and "relative_position_index" not in k})
    with torch.no_grad():
        want = swin(pixel_values=want_pix).pooler_output @ sd["vision_model.projection_head.weight"].T
    assert torch.allclose(dis.encode_images(pix), want / want.norm(dim=-1, keepdim=True), atol=1e-5)
    texts = ["small left pleural effusion", "no", "cardiomegaly with edema of the lung"]
    assert torch.allclose(dis.encode_texts(texts), reference_text(env, texts), atol=1e-5)


def test_vit_conformance(env):
    check_dissector(env["dis"])


def test_resnet_variant(env, tmp_path):
    sd, net = resnet_sd(env["vocab"])
    torch.save(sd, tmp_path / "pytorch_model.bin")
    dis = dk.create("dissector", "medclip", _ctx=env["ctx"], weights=str(tmp_path / "pytorch_model.bin"),
                    tokenizer=str(env["tok"]), variant="resnet")
    assert dis.variant == "resnet" and dis.embed_dim == 512
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (250, 230), dtype=np.uint8), rng.integers(0, 65535, (90, 300), dtype=np.uint16)]
    x = torch.stack([dis.preprocess(i) for i in images])
    assert torch.allclose(x[0], reference_pixels(images[0]), atol=1e-5)
    with torch.no_grad():
        want = net(x)
    got = dis.encode_images(x)
    assert torch.allclose(got, want / want.norm(dim=-1, keepdim=True), atol=1e-5)
    assert torch.allclose(dis.encode_images(x[1:]), got[1:], atol=1e-5)  # batch == one by one (eval-mode BN)


def test_mismatched_weights_are_refused(env, tmp_path):
    sd = dict(env["sd"])
    sd["vision_model.model.layernorm.gamma"] = sd.pop("vision_model.model.layernorm.weight")
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"missing keys: vision_model\.model\.layernorm\.weight.*unexpected keys: "
                                           r"vision_model\.model\.layernorm\.gamma"):
        dk.create("dissector", "medclip", _ctx=env["ctx"], weights=str(tmp_path), tokenizer=str(env["tok"]))
    with pytest.raises(WeightsError, match="variant: resnet"):
        dk.create("dissector", "medclip", _ctx=env["ctx"], weights=str(env["root"] / "vit"), tokenizer=str(env["tok"]),
                  variant="resnet")
    with pytest.raises(WeightsError, match="holds no pytorch_model.bin"):
        dk.create("dissector", "medclip", _ctx=env["ctx"], weights=str(env["root"] / "tok"), tokenizer=str(env["tok"]))


def test_8bit_and_12bit_dicom_give_the_same_input(env, tmp_path):
    """The raw-image contract: a 12-bit DICOM (BitsStored 12) of an 8-bit image reaches MedCLIP as
    the 8-bit image does (12-bit values in a plain 16-bit array would be near black instead)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from dissectkit.plugin import read_image

    a8 = np.random.default_rng(4).integers(0, 256, (90, 70)).astype(np.uint8)
    px = np.rint(a8 * (4095 / 255)).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "a.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, (ds.Rows, ds.Columns) = 1, "MONOCHROME2", px.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation, ds.PixelData = 16, 12, 11, 0, px.tobytes()
    ds.save_as(str(tmp_path / "a.dcm"), enforce_file_format=True)
    dis = env["dis"]
    assert torch.equal(dis.preprocess(read_image(tmp_path / "a.dcm")), dis.preprocess(a8))
    assert float((dis.preprocess(px) - dis.preprocess(a8)).abs().max()) > 1.0
