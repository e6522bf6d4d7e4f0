"""The study's G target ``mammo-clip-imagenet``: timm's ``tf_efficientnet_*`` weights renamed key for key
into efficientnet_pytorch's EfficientNet (the Mammo-CLIP image-encoder architecture), checked against
timm's own module with random weights (no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dissectkit as dk
from dissectkit.plugin import BuildContext, WeightsError
from dissectkit.testing import check_target

MEAN, STD = 0.3089279, 0.25053555408335154


def random_timm(name: str, seed: int = 0):
    """timm's module with random weights and random batch-norm statistics (so they matter)."""
    import timm

    torch.manual_seed(seed)
    m = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def test_conversion_maps_every_tensor_key_for_key():
    """Every tensor of timm's state dict gets exactly one efficientnet_pytorch name, every
    efficientnet_pytorch tensor is filled, with the same shape (B0 here, B5 below)."""
    from dissectkit_mammoclip.imagenet import timm_to_efficientnet
    from efficientnet_pytorch import EfficientNet

    timm_sd = random_timm("tf_efficientnet_b0").state_dict()
    converted = timm_to_efficientnet(timm_sd)
    target = EfficientNet.from_name("efficientnet-b0").state_dict()
    assert len(converted) == len(timm_sd) == len(target)
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    assert {id(v) for v in converted.values()} == {id(v) for v in timm_sd.values()}  # renamed, not copied
    assert converted["_blocks.0._depthwise_conv.weight"] is timm_sd["blocks.0.0.conv_dw.weight"]  # no expansion
    assert converted["_blocks.1._expand_conv.weight"] is timm_sd["blocks.1.0.conv_pw.weight"]
    assert converted["_blocks.1._project_conv.weight"] is timm_sd["blocks.1.0.conv_pwl.weight"]
    assert converted["_bn1.running_var"] is timm_sd["bn2.running_var"]  # the head's batch norm
    with pytest.raises(WeightsError, match="no efficientnet_pytorch name: extra.weight"):
        timm_to_efficientnet({**timm_sd, "extra.weight": torch.zeros(1)})


@pytest.mark.slow
def test_b5_converted_from_timm_gives_timms_outputs(tmp_path):
    """The acceptance figure: timm's tf_efficientnet_b5 (random weights), converted and loaded by the
    G target, gives timm's logits on a 512 x 320 input within float32 tolerance (dynamic "same"
    padding, as TF / timm); the published static padding (for 456) equals it at 456 x 456."""
    from safetensors.torch import save_file

    m = random_timm("tf_efficientnet_b5", seed=1)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    ctx = BuildContext(device="cpu", offline=True, cache_dir=tmp_path / "cache")
    x = torch.randn(1, 3, 512, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, want_feat = m(x), m.forward_features(x)
        g = dk.create("target", "mammo-clip-imagenet", _ctx=ctx, weights=str(path), padding="dynamic",
                      image_size=[512, 320])
        got = g.module(x)
        got_feat = g.module.image_encoder.extract_features(x)
        assert float((got - want).abs().max()) < 1e-5
        assert float((got_feat - want_feat).abs().max()) < 1e-4
        static = dk.create("target", "mammo-clip-imagenet", _ctx=ctx, weights=str(path), image_size=[456, 456])
        x456 = torch.randn(1, 3, 456, 456, generator=torch.Generator().manual_seed(1))
        assert float((static.module(x456) - m(x456)).abs().max()) < 1e-5
        # at 512 x 320 the published static padding (computed for 456) shifts some stride-2 convolutions
        assert float((static.module(x) - want).abs().max()) > 1e-4
    assert [i.name for i in g.layers()] == [f"image_encoder._blocks.{i}" for i in range(39)]


def test_target_layers_weights_and_preprocessing(tmp_path):
    """Layers named like M and C without reading weights; the default weights are timm's hub file
    (named with its fetch command when missing); Mammo-CLIP's preprocessing; efficientnet_pytorch files
    load as they are."""
    from efficientnet_pytorch import EfficientNet

    from dissectkit.engine.preflight import missing_weights

    ctx = BuildContext(device="cpu", offline=True, cache_dir=tmp_path / "cache")
    g = dk.create("target", "mammo-clip-imagenet", _ctx=ctx)
    infos = g.layers()
    assert [i.name for i in infos] == [f"image_encoder._blocks.{i}" for i in range(39)]
    assert infos[-1].shape == (512, 48, 29)
    dynamic = dk.create("target", "mammo-clip-imagenet", _ctx=ctx, padding="dynamic").layers()
    assert [i.shape for i in dynamic] == [i.shape for i in infos]
    params = dk.create("target", "mammo-clip-imagenet", _ctx=ctx).params
    (line,) = missing_weights(params, ctx)
    assert "hf download timm/tf_efficientnet_b5.aa_in1k model.safetensors" in line
    # Mammo-CLIP's preprocessing: per-image min-max, (x - mean) / std, no crop
    img = np.random.default_rng(0).integers(10, 200, (64, 40)).astype(np.uint8)
    small = dk.create("target", "mammo-clip-imagenet", _ctx=ctx, image_size=[64, 40])
    x = small.preprocess(img)
    want = (img.astype(np.float64) - img.min()) / (img.max() - img.min())
    assert tuple(x.shape) == (3, 64, 40)
    np.testing.assert_allclose(x[0].numpy(), (want - MEAN) / STD, atol=1e-5)
    # an efficientnet_pytorch B2 file (already its names, with _fc) loads strictly
    torch.manual_seed(0)
    net = EfficientNet.from_name("efficientnet-b2")
    torch.save(net.state_dict(), tmp_path / "efficientnet-b2.pth")
    b2 = dk.create("target", "mammo-clip-imagenet", _ctx=ctx, weights=str(tmp_path / "efficientnet-b2.pth"),
                   variant="b2", image_size=[64, 64])
    check_target(b2, [img])
    inp = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(b2.module(inp), net.eval()(inp), atol=1e-5)
    with pytest.raises(WeightsError, match="variant: b5.*b2"):
        _ = dk.create("target", "mammo-clip-imagenet", _ctx=ctx, weights=str(tmp_path / "efficientnet-b2.pth"),
                      image_size=[64, 64]).module
