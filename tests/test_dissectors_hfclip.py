"""hf-clip dissector: tiny random CLIPModel / SiglipModel saved with their processors to local dirs."""

from __future__ import annotations

import gzip
import json
import socket

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.base.errors import WeightsError
from dissectkit.testing import check_dissector

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
TEXTS = ["mass", "a photo of a calcification", "dense breast tissue with a mass"]


def clip_bpe_files(root):
    """CLIP's real BPE vocabulary (shipped inside open_clip) written as vocab.json + merges.txt."""
    from open_clip import tokenizer as oct

    with gzip.open(oct.default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    vocab = list(oct.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return len(vocab)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
        PreTrainedTokenizerFast,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    root = tmp_path_factory.mktemp("hfclip")
    n = clip_bpe_files(root)
    tok = CLIPTokenizer.from_pretrained(str(root))  # reads vocab.json + merges.txt
    torch.manual_seed(0)
    text = dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=20, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=VISION, projection_dim=24)).eval()
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    clip.save_pretrained(root / "clip")
    proc.save_pretrained(root / "clip")

    words = ["a", "photo", "of", "mass", "calcification", "dense", "breast", "tissue", "with"]
    wl = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", *words])}, unk_token="<unk>"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=wl, pad_token="<pad>", unk_token="<unk>", eos_token="</s>")
    stext = dict(vocab_size=len(words) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=12, bos_token_id=None, eos_token_id=2, pad_token_id=0)
    siglip = SiglipModel(SiglipConfig(text_config=stext, vision_config=VISION)).eval()
    sproc = SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=fast)
    siglip.save_pretrained(root / "siglip")
    sproc.save_pretrained(root / "siglip")
    return {"root": root, "clip": (clip, proc), "siglip": (siglip, sproc),
            "ctx": BuildContext(offline=True, cache_dir=root / "cache")}


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_matches_transformers_and_conforms(dirs, kind):
    model, proc = dirs[kind]
    dis = dk.create("dissector", "hf-clip", _ctx=dirs["ctx"], model=str(dirs["root"] / kind))
    assert dis.embed_dim == (24 if kind == "clip" else 32)
    assert dis.padding == ("longest" if kind == "clip" else "max_length")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(2)]
    x = torch.stack([dis.preprocess(i) for i in images])
    want_x = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(x, want_x, atol=1e-5)
    with torch.no_grad():
        want_img = model.get_image_features(pixel_values=want_x).pooler_output
        enc = proc.tokenizer(TEXTS, padding=dis.padding, truncation=True, max_length=dis.max_length, return_tensors="pt")
        if kind == "clip":
            want_txt = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
        else:
            want_txt = model.get_text_features(input_ids=enc["input_ids"]).pooler_output
    norm = torch.nn.functional.normalize
    assert torch.allclose(dis.encode_images(x), norm(want_img, dim=-1), atol=1e-5)
    got = dis.encode_texts(TEXTS)
    assert torch.allclose(got, norm(want_txt, dim=-1), atol=1e-5)
    assert (got @ got.T).fill_diagonal_(0).max() < 0.999
    check_dissector(dis, texts=TEXTS)


def test_clip_tokenizer_is_real_bpe(dirs):
    dis = dk.create("dissector", "hf-clip", _ctx=dirs["ctx"], model=str(dirs["root"] / "clip"))
    ids = dis.processor.tokenizer(["a photo of a mass"])["input_ids"][0]
    assert len(ids) == 7 and ids[0] == 49406 and ids[-1] == 49407  # <start> a photo of a mass <end>


def test_offline_missing_hub_model_is_named(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(WeightsError, match="offline mode is on.*hf download google/siglip-base-patch16-224"):
        dk.create("dissector", "hf-clip", _ctx=BuildContext(offline=True, cache_dir=tmp_path),
                  model="google/siglip-base-patch16-224")


@pytest.mark.parametrize("change, expect", [
    ("missing", "missing keys: visual_projection.weight"),
    ("extra", "unexpected keys: extra.weight"),
    ("shape", "mis-shaped keys: text_projection.weight"),
])
def test_mismatched_weights_are_refused(dirs, tmp_path, change, expect):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "clip"
    shutil.copytree(dirs["root"] / "clip", folder)
    sd = load_file(folder / "model.safetensors")
    if change == "missing":
        sd.pop("visual_projection.weight")
    elif change == "extra":
        sd["extra.weight"] = torch.zeros(2)
    else:
        sd["text_projection.weight"] = torch.zeros(5, 5)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=expect.replace(".", r"\.")):
        dk.create("dissector", "hf-clip", _ctx=dirs["ctx"], model=str(folder))
