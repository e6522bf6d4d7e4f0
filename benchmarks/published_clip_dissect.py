"""CLIP-Dissect's published pipeline *structure*, run on the synthetic world: the baseline of the
end-to-end comparisons in docs/scaling.md (issue 22). Written from ../shared/docs/methods.md (the
similarity functions) and the layout of the published scripts (describe_neurons.py, utils.py,
similarity.py); no published code is copied.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/published_clip_dissect.py --n 1000 --concept-set words.txt \\
        --activation-dir ACTS --result-dir RESULTS [--similarity soft_wpmi] [--layers blocks.1,blocks.5,classifier]

What it does, in the published order:

1. imports what the published modules import at the top (torch, torchvision, pandas, tqdm, and the
   model library: timm for the synthetic targets' ``tinynet_e``);
2. ``save_activations``: loads both models (the CLIP - here ``synth-clip`` - and the target, built
   with its model library and given its weights), sets up one dataset per model's preprocessing,
   then saves the concept texts' features, the CLIP image features (one pass over the probe) and
   the target's activations (a second pass; forward hooks average each chosen layer's output over
   space), each to a ``.pt`` file named after (probe, model, layer, pool / concept set), and skips
   a file that exists - a re-run with another similarity function loads the models and sets up
   the datasets, but reads no image;
3. per layer: loads the saved features, L2-normalises the image and text features,
   ``P = I T^T``, applies the similarity function, and each neuron's description is the argmax;
4. a pandas DataFrame (layer, unit, description, similarity) -> ``descriptions.csv`` and the
   arguments -> ``args.txt`` in a new time-stamped folder of ``--result-dir``.

DataLoaders use the published ``num_workers=8, pin_memory=True``; the images are the synthetic
probe's (``synth-mammo``, seed 0), read by the same generator dissectkit's probe uses.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os

import numpy as np  # noqa: F401 - imported at the top of the published modules, as here
import pandas as pd
import torch
import torchvision  # noqa: F401 - the published data utilities and the CLIP package import it
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

POOL_SUFFIX = {"avg": "", "max": "_max"}


# ------------------------------------------------------------------------------ similarity.py
def soft_wpmi(clip_feats, target_feats, top_k=100, a=10, lam=1, device="cpu", min_prob=1e-7, p_start=0.998, p_end=0.97):
    """methods.md, soft_wpmi: per neuron, the soft membership of its top_k images, one neuron at a time."""
    with torch.no_grad():
        q = torch.softmax(a * clip_feats, dim=1)
        top = torch.topk(target_feats, k=top_k, dim=0).indices
        p = (p_start - torch.arange(top_k) / top_k * (p_start - p_end)).unsqueeze(1).to(device)
        rows = []
        for k in tqdm(range(target_feats.shape[1]), disable=True):
            chosen = q.gather(0, top[:, k : k + 1].expand(-1, q.shape[1])).to(device)
            rows.append(torch.log(1 + p * (chosen - 1) + min_prob).sum(dim=0, keepdim=True))
        log_p = torch.cat(rows, dim=0)
        prior = torch.logsumexp(log_p, dim=0, keepdim=True) - math.log(log_p.shape[0])
        return log_p - lam * prior


def wpmi(clip_feats, target_feats, top_k=28, a=2, lam=0.6, device="cpu", min_prob=1e-7):
    with torch.no_grad():
        q = torch.softmax(a * clip_feats, dim=1)
        top = torch.topk(target_feats, k=top_k, dim=0).indices
        rows = []
        for k in range(target_feats.shape[1]):
            chosen = q.gather(0, top[:, k : k + 1].expand(-1, q.shape[1])).to(device)
            rows.append(torch.log(chosen + min_prob).sum(dim=0, keepdim=True))
        log_p = torch.cat(rows, dim=0)
        prior = torch.logsumexp(log_p, dim=0, keepdim=True) - math.log(log_p.shape[0])
        return log_p - lam * prior


def cos_similarity(clip_feats, target_feats, device="cpu"):
    with torch.no_grad():
        c = clip_feats / clip_feats.norm(p=2, dim=0, keepdim=True).clamp(min=1e-12)
        t = target_feats / target_feats.norm(p=2, dim=0, keepdim=True).clamp(min=1e-12)
        return (t.T.to(device) @ c.to(device)).cpu()


def cos_similarity_cubed(clip_feats, target_feats, device="cpu", batch_size=10_000, min_norm=1e-3):
    with torch.no_grad():
        c = (clip_feats - clip_feats.mean(0, keepdim=True)) ** 3
        t = (target_feats - target_feats.mean(0, keepdim=True)) ** 3
        c = c / c.norm(p=2, dim=0, keepdim=True).clamp(min=min_norm)
        t = t / t.norm(p=2, dim=0, keepdim=True).clamp(min=min_norm)
        out = []
        for i in range(math.ceil(t.shape[1] / batch_size)):
            block = t[:, i * batch_size : (i + 1) * batch_size].to(device).T
            out.append(torch.cat([block @ c[:, j * batch_size : (j + 1) * batch_size].to(device)
                                  for j in range(math.ceil(c.shape[1] / batch_size))], dim=1))
        return torch.cat(out, dim=0)


SIMILARITIES = {"soft_wpmi": soft_wpmi, "wpmi": wpmi, "cos": cos_similarity, "cos3": cos_similarity_cubed}


# ------------------------------------------------------------------------------ data_utils.py
class ProbeImages(Dataset):
    """The probe as the published ``get_data`` gives it: (preprocessed image, label) pairs."""

    def __init__(self, n: int, seed: int, preprocess) -> None:
        from dissectkit.synthetic.generator import SynthMammoGenerator

        self.n, self.generator, self.preprocess = n, SynthMammoGenerator(seed=seed), preprocess

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.preprocess(self.generator.item(i).image), 0


def get_data(n: int, seed: int, preprocess) -> ProbeImages:
    return ProbeImages(n, seed, preprocess)


def _weights(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from dissectkit.synthetic import arch

    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(arch.packaged_ref(name)["path"]).items()}


def load_clip(name: str, device: str):
    """The CLIP model and its preprocessing (``clip.load``): here the synthetic world's ``synth-clip``."""
    from dissectkit.synthetic import arch, models

    model = models.build_clip(arch.read_config()["clip"])
    model.load_state_dict(_weights(name))
    return model.eval().to(device), models.preprocess_image


def get_target_model(name: str, device: str):
    """The target from its model library (timm's ``tinynet_e``) with its weights, and its preprocessing."""
    import timm

    from dissectkit.synthetic import arch, models

    classes = arch.target_classes(name, arch.read_config())
    model = timm.create_model(arch.TARGET_ARCH, pretrained=False, num_classes=arch.n_outputs(classes))
    model.load_state_dict(_weights(name))
    return model.eval().to(device), models.preprocess_image


def tokenize(words: list[str]):
    from dissectkit.synthetic import arch, models

    return models.build_tokenizer(arch.read_config()["clip"]).batch(words)


# ------------------------------------------------------------------------------ utils.py
def get_activation(outputs: list, mode: str):
    def hook(_model, _input, output):
        if output.dim() == 4:
            outputs.append((output.mean(dim=[2, 3]) if mode == "avg" else output.amax(dim=[2, 3])).detach().cpu())
        else:
            outputs.append(output.detach().cpu())
    return hook


def get_save_names(clip_name, target_name, target_layer, d_probe, concept_set, pool_mode, save_dir):
    target_save = f"{save_dir}/{d_probe}_{target_name}_{target_layer}{POOL_SUFFIX[pool_mode]}.pt"
    clip_save = f"{save_dir}/{d_probe}_clip_{clip_name}.pt"
    concept_name = os.path.splitext(os.path.basename(concept_set))[0]
    text_save = f"{save_dir}/{concept_name}_{clip_name}.pt"
    return target_save, clip_save, text_save


def save_target_activations(model, dataset, save_name, target_layers, batch_size, device, pool_mode, workers):
    names = {layer: save_name.format(layer) for layer in target_layers}
    if all(os.path.exists(p) for p in names.values()):
        return
    features: dict[str, list] = {layer: [] for layer in target_layers}
    modules = dict(model.named_modules())
    hooks = {layer: modules[layer].register_forward_hook(get_activation(features[layer], pool_mode)) for layer in target_layers}
    with torch.no_grad():
        for images, _labels in tqdm(DataLoader(dataset, batch_size, num_workers=workers, pin_memory=True), disable=True):
            model(images.to(device))
    for layer in target_layers:
        torch.save(torch.cat(features[layer]), names[layer])
        hooks[layer].remove()
    del features


def save_clip_image_features(model, dataset, save_name, batch_size, device, workers):
    if os.path.exists(save_name):
        return
    parts = []
    with torch.no_grad():
        for images, _labels in tqdm(DataLoader(dataset, batch_size, num_workers=workers, pin_memory=True), disable=True):
            parts.append(model.encode_image(images.to(device)).cpu())
    torch.save(torch.cat(parts), save_name)


def save_clip_text_features(model, text, save_name, batch_size, device):
    if os.path.exists(save_name):
        return
    ids, offsets = text
    with torch.no_grad():
        feats = model.encode_text(torch.from_numpy(ids).to(device), torch.from_numpy(offsets).to(device)).cpu()
    torch.save(feats, save_name)


def save_activations(args) -> None:
    clip_model, clip_preprocess = load_clip(args.clip_model, args.device)
    target_model, target_preprocess = get_target_model(args.target_model, args.device)
    data_c = get_data(args.n, args.seed, clip_preprocess)
    data_t = get_data(args.n, args.seed, target_preprocess)
    with open(args.concept_set) as f:
        words = [w for w in f.read().split("\n") if w != ""]
    text = tokenize(words)
    target_save, clip_save, text_save = get_save_names(args.clip_model, args.target_model, "{}", args.d_probe,
                                                       args.concept_set, args.pool_mode, args.activation_dir)
    os.makedirs(args.activation_dir, exist_ok=True)
    save_clip_text_features(clip_model, text, text_save, args.batch_size, args.device)
    save_clip_image_features(clip_model, data_c, clip_save, args.batch_size, args.device, args.num_workers)
    save_target_activations(target_model, data_t, target_save, args.target_layers, args.batch_size, args.device,
                            args.pool_mode, args.num_workers)


def get_similarity_from_activations(target_save, clip_save, text_save, similarity_fn, device):
    image_features = torch.load(clip_save, map_location="cpu").float()
    text_features = torch.load(text_save, map_location="cpu").float()
    with torch.no_grad():
        image_features /= image_features.norm(dim=-1, keepdim=True)
        text_features /= text_features.norm(dim=-1, keepdim=True)
        clip_feats = image_features @ text_features.T
    del image_features, text_features
    target_feats = torch.load(target_save, map_location="cpu")
    return similarity_fn(clip_feats, target_feats, device=device)


# ------------------------------------------------------------------------------ describe_neurons.py
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CLIP-Dissect (published structure) on the synthetic world")
    parser.add_argument("--clip_model", "--clip-model", default="synth-clip")
    parser.add_argument("--target_model", "--target-model", default="synth-effnet-concepts")
    parser.add_argument("--target_layers", "--layers", default="blocks.1,blocks.5,classifier")
    parser.add_argument("--d_probe", default="synth_mammo")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concept_set", "--concept-set", required=True)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=100)
    parser.add_argument("--num_workers", "--num-workers", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--activation_dir", "--activation-dir", required=True)
    parser.add_argument("--result_dir", "--result-dir", required=True)
    parser.add_argument("--pool_mode", default="avg")
    parser.add_argument("--similarity_fn", "--similarity", default="soft_wpmi", choices=sorted(SIMILARITIES))
    args = parser.parse_args(argv)
    args.target_layers = args.target_layers.split(",")
    args.d_probe = f"{args.d_probe}{args.n}"  # one probe per size
    similarity_fn = SIMILARITIES[args.similarity_fn]

    save_activations(args)
    outputs: dict[str, list] = {"layer": [], "unit": [], "description": [], "similarity": []}
    with open(args.concept_set) as f:
        words = [w for w in f.read().split("\n") if w != ""]
    for layer in args.target_layers:
        target_save, clip_save, text_save = get_save_names(args.clip_model, args.target_model, layer, args.d_probe,
                                                           args.concept_set, args.pool_mode, args.activation_dir)
        similarities = get_similarity_from_activations(target_save, clip_save, text_save, similarity_fn, args.device)
        vals, ids = torch.max(similarities, dim=1)
        outputs["unit"].extend(range(len(vals)))
        outputs["layer"].extend([layer] * len(vals))
        outputs["description"].extend(words[int(i)] for i in ids)
        outputs["similarity"].extend(vals.cpu().numpy())
    df = pd.DataFrame(outputs)
    os.makedirs(args.result_dir, exist_ok=True)
    save_path = os.path.join(args.result_dir, f"{args.target_model}_{datetime.datetime.now():%y_%m_%d_%H_%M_%S_%f}")
    os.mkdir(save_path)
    df.to_csv(os.path.join(save_path, "descriptions.csv"), index=False)
    with open(os.path.join(save_path, "args.txt"), "w") as f:
        json.dump(vars(args), f, indent=2)
    print(save_path)


if __name__ == "__main__":
    main()
