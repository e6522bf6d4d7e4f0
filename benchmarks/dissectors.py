"""Image-embedding throughput of each dissector vs a bare loop over its underlying encoder.

Random-weight models with the real architectures (sizes reduced where noted) are written to a temp
dir in the released layouts and loaded through ``dk.create``; both sides embed the same
preprocessed batches, interleaved, median of ``--repeats``. Target: overhead <= 10%.

    .venv/bin/python benchmarks/dissectors.py [--device cpu|cuda] [--batch 8] [--batches 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def bert_tokenizer_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    words = ["mass", "calcification", "benign", "malignant", "breast", "dense", "normal", "the", "a", "of"]
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    (root / "tokenizer_config.json").write_text('{"do_lower_case": true, "tokenizer_class": "BertTokenizer"}')
    return root


def bert_sd(prefix: str):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=15, hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=128,
                     max_position_embeddings=300)
    return {prefix + k: v for k, v in BertModel(cfg).state_dict().items()}


def build_mammo_clip(root: Path, ctx, size):
    import torch
    from efficientnet_pytorch import EfficientNet

    import dissectkit as dk

    net = EfficientNet.from_name("efficientnet-b2")
    sd = {f"image_encoder.{k}": v for k, v in net.state_dict().items() if not k.startswith("_fc.")}
    sd.update(bert_sd("text_encoder.text_encoder."))
    sd.update({"image_projection.projection.weight": torch.randn(512, 1408) * 0.02,
               "image_projection.projection.bias": torch.zeros(512),
               "text_projection.projection.weight": torch.randn(512, 64) * 0.02,
               "text_projection.projection.bias": torch.zeros(512), "logit_scale": torch.tensor(2.66)})
    torch.save({"model": sd, "config": {"model": {"image_encoder": {"name": "tf_efficientnetv2-detect"}}},
                "optimizer": {}, "scheduler": {}, "epoch": 1, "train_loss": np.float64(1.0)}, root / "b2.tar")
    dis = dk.create("dissector", "mammo-clip", _ctx=ctx, weights=str(root / "b2.tar"), trust_checkpoint=True,
                    tokenizer=str(bert_tokenizer_dir(root / "tok")), image_size=list(size))
    return dis, lambda x: dis.model.embed_images(x)


def build_medclip(root: Path, ctx, size):
    import torch
    from transformers import SwinConfig, SwinModel

    import dissectkit as dk

    swin = SwinModel(SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24]))  # real swin-tiny
    sd = {f"vision_model.model.{k}": v for k, v in swin.state_dict().items()}
    sd["vision_model.projection_head.weight"] = torch.randn(512, 768) * 0.02
    sd.update(bert_sd("text_model.model."))
    sd["text_model.projection_head.weight"] = torch.randn(512, 64) * 0.02
    torch.save(sd, root / "pytorch_model.bin")
    dis = dk.create("dissector", "medclip", _ctx=ctx, weights=str(root / "pytorch_model.bin"),
                    tokenizer=str(bert_tokenizer_dir(root / "tok2")))
    return dis, lambda x: dis.model.vision_model(x)


def build_open_clip(root: Path, ctx, size):
    import open_clip
    import torch

    import dissectkit as dk

    cfg = {"embed_dim": 256, "vision_cfg": {"image_size": 224, "layers": 6, "width": 384, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 256, "heads": 4, "layers": 2}}
    (root / "dk-bench-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "dk-bench-clip.json")
    torch.save(open_clip.create_model("dk-bench-clip").state_dict(), root / "oc.pt")
    dis = dk.create("dissector", "open-clip", _ctx=ctx, model="dk-bench-clip", pretrained=str(root / "oc.pt"))
    return dis, lambda x: dis.model.encode_image(x)


def build_hf_clip(root: Path, ctx, size):
    from open_clip import tokenizer as oct
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    import dissectkit as dk

    with gzip.open(oct.default_bpe()) as fh:
        merges = [tuple(m.split()) for m in fh.read().decode().split("\n")[1:48895]]
    vocab = list(oct.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    text = dict(vocab_size=len(vocab), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=4, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    vision = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6, image_size=224,
                  patch_size=16)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=256)).save_pretrained(root / "hf")
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=CLIPTokenizer.from_pretrained(str(root))).save_pretrained(root / "hf")
    dis = dk.create("dissector", "hf-clip", _ctx=ctx, model=str(root / "hf"))
    return dis, lambda x: dis.model.get_image_features(pixel_values=x).pooler_output


def measure(dis, bare, batches, repeats: int, device: str):
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def run_bare(b):
        with torch.inference_mode(), dis._autocast():
            bare(b.to(device))

    for b in batches[:1]:  # warm-up
        dis.encode_images(b), run_bare(b)
    totals = {"dissector": [], "bare": []}
    pair = (("bare", run_bare), ("dissector", dis.encode_images))
    for r in range(repeats):  # interleaved batch by batch (order alternating), so load drift hits both alike
        acc = {"dissector": 0.0, "bare": 0.0}
        for b in batches:
            for name, fn in pair if r % 2 == 0 else pair[::-1]:
                sync()
                t0 = time.perf_counter()
                fn(b)
                sync()
                acc[name] += time.perf_counter() - t0
        for name in acc:
            totals[name].append(acc[name])
    return statistics.median(totals["dissector"]), statistics.median(totals["bare"])


def main() -> None:
    import torch

    from dissectkit.base.context import BuildContext

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mammo-size", type=int, nargs=2, default=[256, 160], help="Mammo-CLIP input H W (1520 912 = real)")
    ap.add_argument("--only", nargs="*", default=["mammo-clip", "medclip", "open-clip", "hf-clip"])
    args = ap.parse_args()
    builders = {"mammo-clip": build_mammo_clip, "medclip": build_medclip, "open-clip": build_open_clip,
                "hf-clip": build_hf_clip}
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"device={args.device} batch={args.batch} batches={args.batches} repeats={args.repeats}")
    print(f"{'dissector':<12} {'input':>12} {'dissector img/s':>16} {'bare img/s':>11} {'overhead':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = BuildContext(device=args.device, offline=True, cache_dir=Path(tmp) / "cache")
        for name in args.only:
            root = Path(tmp) / name
            root.mkdir()
            dis, bare = builders[name](root, ctx, tuple(args.mammo_size))
            raw = [rng.integers(0, 256, (600, 400), dtype=np.uint8) for _ in range(args.batch)]
            one = torch.stack([dis.preprocess(r) for r in raw])
            batches = [one.clone() for _ in range(args.batches)]
            t_dis, t_bare = measure(dis, bare, batches, args.repeats, args.device)
            n = args.batch * args.batches
            shape = "x".join(str(s) for s in one.shape[2:])
            print(f"{name:<12} {shape:>12} {n / t_dis:16.1f} {n / t_bare:11.1f} {100 * (t_dis / t_bare - 1):8.1f}%")
            del dis, bare


if __name__ == "__main__":
    main()
