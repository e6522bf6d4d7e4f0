"""One raw-image contract for every built-in target and dissector: an 8-bit image and its 12-bit DICOM
version (BitsStored 12, read by the DICOM reader) give each model the same input up to quantisation.
(The first-party plugins check the same in their own test suites.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dicom_factory import write_dicom

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.imaging.dicom import read_dicom

CTX = BuildContext(device="cpu", offline=True)


def tiny_net(channels: int = 3):
    """A factory for the `module` target."""
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(8-bit grey image, the same image as read from its 12-bit DICOM, and as RGB)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:60, 0:52]
    a8 = np.clip(40 + 3 * xx + rng.integers(0, 60, xx.shape), 0, 255).astype(np.uint8)
    v12 = np.rint(a8 * (4095 / 255)).astype(np.uint16)
    path = write_dicom(tmp_path_factory.mktemp("parity") / "a12.dcm", v12, bits_stored=12)
    return a8, read_dicom(path)


def _hf_clip_dir(root):
    from test_dissectors_hfclip import VISION, clip_bpe_files
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    n = clip_bpe_files(root)
    text = dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=20, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1)
    CLIPModel(CLIPConfig(text_config=text, vision_config=VISION, projection_dim=24)).save_pretrained(root / "clip")
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}),
                         tokenizer=CLIPTokenizer.from_pretrained(str(root)))
    proc.save_pretrained(root / "clip")
    return str(root / "clip")


MODELS = {
    "timm": lambda tmp, d: dk.create("target", "timm", _ctx=CTX, model="resnet18", num_classes=2, input_size=(3, 64, 64)),
    "torchvision": lambda tmp, d: dk.create("target", "torchvision", _ctx=CTX, model="resnet18", num_classes=2,
                                            input_size=64),
    "module-grey": lambda tmp, d: dk.create("target", "module", _ctx=CTX, factory="test_imaging_parity:tiny_net",
                                            kwargs={"channels": 1}, input_size=32, channels=1, mean=[0.5], std=[0.25]),
    "densenet121-cxr": lambda tmp, d: dk.create("target", "densenet121-cxr", _ctx=CTX),
    "synth-effnet-concepts": lambda tmp, d: dk.create("target", "synth-effnet-concepts", _ctx=CTX),
    "synth-clip": lambda tmp, d: dk.create("dissector", "synth-clip", _ctx=CTX),
    "open-clip": lambda tmp, d: dk.create("dissector", "open-clip", _ctx=CTX, pretrained=f"local-dir:{d}"),
    "hf-clip": lambda tmp, d: dk.create("dissector", "hf-clip", _ctx=CTX, model=_hf_clip_dir(tmp)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_8bit_and_12bit_dicom_give_the_same_model_input(name, pair, tiny_openclip_dir, tmp_path):
    a8, a12 = pair
    assert a12.dtype == np.uint16 and int(a12.max()) > 255 * 16
    model = MODELS[name](tmp_path, tiny_openclip_dir)
    x8, x12 = model.preprocess(a8), model.preprocess(a12)
    assert x8.shape == x12.shape
    # display-range models see identical 8-bit pixels; per-image min-max models differ by the
    # quantisation of 8 vs 12 bits only (half a 12-bit level, relative to the image's range)
    diff = float((x8 - x12).abs().max())
    assert diff <= 2e-3, f"{name}: 8-bit and 12-bit inputs differ by {diff}"
    dark = model.preprocess((a12 // 16).astype(np.uint16))  # 12-bit values left in a 16-bit array
    if name.startswith("synth"):  # min-max per image by design: independent of the range
        assert float((dark - x8).abs().max()) <= 2e-3, name
    else:  # the display range: such data is near black (the bug the DICOM reader's shift avoids)
        assert float((dark - x8).abs().max()) > 0.5, name
