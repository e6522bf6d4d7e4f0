"""``dissectkit synth train``: train synth-clip and the three EfficientNet targets, seeded, on CPU.

Training data come from the generator with seed ``10000 + seed``; held-out evaluation images from
seed ``20000 + seed``, so neither overlaps the default probe (seed 0). Everything is written as
float16 safetensors plus one json config (``synth_world.json``) with the training settings, the
time it took and the held-out figures.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dissectkit.synthetic import vocab

TRAIN_SEED_OFFSET = 10_000
EVAL_SEED_OFFSET = 20_000


@dataclass
class TrainConfig:
    """Sizes of one training run (``quick`` shrinks everything for tests)."""

    seed: int = 0
    n_train: int = 6000
    n_eval: int = 400
    clip_epochs: int = 7
    clip_batch: int = 48
    clip_lr: float = 3e-3
    concepts_epochs: int = 6
    malignancy_epochs: int = 2
    malignancy_train: int = 2000
    general_train: int = 1500
    general_epochs: int = 3
    batch: int = 48
    lr: float = 3e-3
    threads: int = 1  # one thread: fastest on a busy machine (no OpenMP spin-waiting); 0 = torch default

    @classmethod
    def quick(cls, seed: int = 0) -> TrainConfig:
        return cls(seed=seed, n_train=48, n_eval=40, clip_epochs=1, clip_batch=16, concepts_epochs=1,
                   malignancy_epochs=1, malignancy_train=32, general_train=16, general_epochs=1, batch=16)


# ----------------------------------------------------------------------------------------- data
def _light(sample):
    """Keep what a report needs (attributes, finding concepts and locations), drop pixels and masks."""
    from dissectkit.synthetic.generator import Finding, Sample, _MassFinding

    fs = [
        _MassFinding(f.concepts, None, f.location, None) if isinstance(f, _MassFinding) else Finding(f.concepts, None, f.location)
        for f in sample.findings
    ]
    return Sample(None, {}, sample.labels, sample.attrs, fs)


def make_mammo_set(seed: int, n: int):
    """``n`` generated images prepared for the models (float16 ``[n, 1, h, w]``), their targets and samples."""
    import torch

    from dissectkit.imaging import minmax_unit
    from dissectkit.synthetic.generator import SynthMammoGenerator
    from dissectkit.synthetic.models import prepare_batch

    gen = SynthMammoGenerator(seed=seed)
    xs, samples = [], []
    chunk: list[np.ndarray] = []
    for i in range(n):
        smp = gen.sample(i)
        chunk.append(minmax_unit(smp.image))
        samples.append(_light(smp))
        if len(chunk) == 256 or i == n - 1:
            xs.append(prepare_batch(np.stack(chunk))[:, :1].to(torch.float16))
            chunk = []
    x = torch.cat(xs)
    y = torch.tensor([concept_targets(s.labels) for s in samples], dtype=torch.float32)
    mal = torch.tensor([float(s.labels["malignancy"]) for s in samples])
    mal_true = torch.tensor([float(s.labels["malignancy_true"]) for s in samples])
    return x, y, mal, mal_true, samples


def concept_targets(labels: dict[str, Any]) -> list[float]:
    """Multi-hot over ``vocab.CONCEPT_CLASSES``: findings present and the one composition class."""
    comp = vocab.COMPOSITION_LETTERS.index(labels["composition"])
    return [float(labels[f]) for f in vocab.FINDINGS] + [float(i == comp) for i in range(4)]


def make_shapes_set(seed: int, n: int):
    import torch

    from dissectkit.imaging import minmax_unit
    from dissectkit.synthetic.models import prepare_batch
    from dissectkit.synthetic.shapes import shape_image

    imgs, labels = zip(*(shape_image(seed, i) for i in range(n)), strict=True)
    x = torch.cat([prepare_batch(np.stack([minmax_unit(im) for im in imgs[i : i + 256]]))[:, :1].to(torch.float16)
                   for i in range(0, n, 256)])
    return x, torch.tensor(np.stack(labels))


def _expand(xb):
    return xb.float().expand(-1, 3, -1, -1)


# ----------------------------------------------------------------------------------------- metrics
def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks); NaN when one class is absent."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ----------------------------------------------------------------------------------------- training
def _cosine_lr(opt, base: float, step: int, total: int, warmup: int = 20) -> None:
    lr = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
    for g in opt.param_groups:
        g["lr"] = lr


def _caption(sample, rng: np.random.Generator) -> tuple[str, frozenset[str]]:
    """A text for an image and the concepts it states: the whole report (35%) or one of its
    sentences that states something (65%)."""
    from dissectkit.synthetic.generator import report_sentences

    sentences = report_sentences(sample, rng)
    if rng.random() < 0.35:
        return " ".join(t for t, _ in sentences), frozenset().union(*(c for _, c in sentences))
    stating = [s for s in sentences if s[1]]
    return stating[int(rng.integers(len(stating)))]


def image_concepts(labels: dict[str, Any]) -> frozenset[str]:
    return frozenset([f for f in vocab.FINDINGS if labels[f]] + [labels["density"]])


def train_clip(cfg: TrainConfig, x, samples, log: Callable[[str], None]):
    import torch
    import torch.nn.functional as F

    from dissectkit.synthetic.models import CLIP_CONFIG, build_clip
    from dissectkit.synthetic.text import HashTokenizer

    torch.manual_seed(cfg.seed)
    model = build_clip(CLIP_CONFIG)
    tok = HashTokenizer(CLIP_CONFIG["buckets"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.01)
    have = [image_concepts(s.labels) for s in samples]
    rng = np.random.default_rng([cfg.seed, 1])
    steps_per_epoch = max(len(x) // cfg.clip_batch, 1)
    total = steps_per_epoch * cfg.clip_epochs
    step = 0
    model.train()
    for epoch in range(cfg.clip_epochs):
        running = 0.0
        perm = rng.permutation(len(x))
        batches = [perm[b * cfg.clip_batch : (b + 1) * cfg.clip_batch] for b in range(steps_per_epoch)]
        for idx in batches:
            caps = [_caption(samples[i], np.random.default_rng([cfg.seed, epoch, int(i)])) for i in idx]
            texts = [t for t, _ in caps]
            # semantic matching (as MedCLIP): image i and text j match when i has every concept j states
            match = torch.tensor([[float(c <= have[i]) for _, c in caps] for i in idx])
            ids, offsets = tok.batch(texts)
            _cosine_lr(opt, cfg.clip_lr, step, total)
            img = model.encode_image(_expand(x[idx]))
            txt = model.encode_text(torch.from_numpy(ids), torch.from_numpy(offsets))
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
            to_text = match / match.sum(1, keepdim=True)
            to_image = match / match.sum(0, keepdim=True)
            loss = -((to_text * F.log_softmax(logits, 1)).sum(1).mean() + (to_image * F.log_softmax(logits, 0)).sum(0).mean()) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            step += 1
        log(f"  synth-clip epoch {epoch + 1}/{cfg.clip_epochs}: loss {running / len(batches):.3f}")
    return model.eval()


def train_classifier(model, x, y, epochs: int, batch: int, lr: float, seed: int, log, name: str):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = len(x)
    steps_per_epoch = max(n // batch, 1)
    total = steps_per_epoch * epochs
    rng = np.random.default_rng([seed, 2])
    step = 0
    model.train()
    for epoch in range(epochs):
        perm = rng.permutation(n)
        running = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * batch : (b + 1) * batch]
            _cosine_lr(opt, lr, step, total)
            out = model(_expand(x[idx]))
            loss = F.binary_cross_entropy_with_logits(out, y[idx].reshape(out.shape))
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            step += 1
        log(f"  {name} epoch {epoch + 1}/{epochs}: loss {running / steps_per_epoch:.4f}")
    return model.eval()


def predict(model, x, batch: int = 256):
    import torch

    with torch.no_grad():
        return torch.cat([model(_expand(x[i : i + batch])) for i in range(0, len(x), batch)])


def zero_shot_auc(model, x, labels: list[dict[str, Any]], batch: int = 256) -> dict[str, float]:
    """Per finding (and composition class): AUC of cos(image, concept text) for presence."""
    import torch

    from dissectkit.synthetic.models import CLIP_CONFIG
    from dissectkit.synthetic.text import HashTokenizer

    tok = HashTokenizer(CLIP_CONFIG["buckets"])
    with torch.no_grad():
        img = torch.cat([model.encode_image(_expand(x[i : i + batch])) for i in range(0, len(x), batch)])
        ids, offsets = tok.batch(list(vocab.CONCEPT_CLASSES))
        txt = model.encode_text(torch.from_numpy(ids), torch.from_numpy(offsets))
    sims = (img @ txt.T).numpy()
    y = np.array([concept_targets(lab) for lab in labels])
    return {c: auc(sims[:, j], y[:, j]) for j, c in enumerate(vocab.CONCEPT_CLASSES)}


# ----------------------------------------------------------------------------------------- entry point
def train_all(cfg: TrainConfig, out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every first-party model and write ``out_dir/*.safetensors`` and ``synth_world.json``."""
    import torch

    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train_all(cfg, out_dir, log)
    finally:
        torch.set_num_threads(previous_threads)


def _train_all(cfg: TrainConfig, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from dissectkit.synthetic.models import (
        CLIP_CONFIG,
        CONFIG_FILE,
        TARGET_ARCH,
        build_effnet,
        state_dict_fp16,
    )
    from dissectkit.synthetic.shapes import SHAPE_CLASSES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict[str, float] = {}
    log(f"Generating {cfg.n_train} training and {cfg.n_eval} held-out images ...")
    x, y, mal, _, samples = make_mammo_set(TRAIN_SEED_OFFSET + cfg.seed, cfg.n_train)
    xe, ye, _, mal_true_e, samples_e = make_mammo_set(EVAL_SEED_OFFSET + cfg.seed, cfg.n_eval)
    timings["data_s"] = time.time() - t0

    t = time.time()
    log("Training synth-clip (contrastive, image vs report) ...")
    clip = train_clip(cfg, x, samples, log)
    zs = zero_shot_auc(clip, xe, [s.labels for s in samples_e])
    log(f"  synth-clip held-out zero-shot AUC, mean over findings: {_mean([zs[f] for f in vocab.FINDINGS])}")
    timings["clip_s"] = time.time() - t
    save_file(state_dict_fp16(clip), str(out_dir / "synth_clip.safetensors"))

    t = time.time()
    log(f"Training synth-effnet-concepts ({TARGET_ARCH}, {len(vocab.CONCEPT_CLASSES)} outputs) ...")
    torch.manual_seed(cfg.seed)
    concepts = build_effnet(len(vocab.CONCEPT_CLASSES))
    concepts = train_classifier(concepts, x, y, cfg.concepts_epochs, cfg.batch, cfg.lr, cfg.seed, log, "concepts")
    pe = predict(concepts, xe).numpy()
    concept_auc = {c: auc(pe[:, j], ye[:, j].numpy()) for j, c in enumerate(vocab.CONCEPT_CLASSES)}
    log(f"  concepts held-out AUC, mean over outputs: {_mean(list(concept_auc.values()))}")
    timings["concepts_s"] = time.time() - t
    save_file(state_dict_fp16(concepts), str(out_dir / "synth_effnet_concepts.safetensors"))

    t = time.time()
    log("Fine-tuning synth-effnet-malignancy from the concepts backbone ...")
    torch.manual_seed(cfg.seed + 1)
    malignancy = build_effnet(1)
    backbone = {k: v for k, v in concepts.state_dict().items() if not k.startswith("classifier.")}
    malignancy.load_state_dict(backbone, strict=False)
    nm = min(cfg.malignancy_train, len(x))
    malignancy = train_classifier(malignancy, x[:nm], mal[:nm], cfg.malignancy_epochs, cfg.batch, cfg.lr / 3, cfg.seed + 1, log, "malignancy")
    mal_auc = auc(predict(malignancy, xe).numpy()[:, 0], mal_true_e.numpy())
    timings["malignancy_s"] = time.time() - t
    save_file(state_dict_fp16(malignancy), str(out_dir / "synth_effnet_malignancy.safetensors"))

    t = time.time()
    log("Training synth-effnet-general on synthetic shapes (non-mammography) ...")
    xs, ys = make_shapes_set(TRAIN_SEED_OFFSET + cfg.seed, cfg.general_train)
    xse, yse = make_shapes_set(EVAL_SEED_OFFSET + cfg.seed, max(cfg.n_eval // 2, 32))
    torch.manual_seed(cfg.seed + 2)
    general = build_effnet(len(SHAPE_CLASSES))
    general = train_classifier(general, xs, ys, cfg.general_epochs, cfg.batch, cfg.lr, cfg.seed + 2, log, "general")
    pg = predict(general, xse).numpy()
    general_auc = {c: auc(pg[:, j], yse[:, j].numpy()) for j, c in enumerate(SHAPE_CLASSES)}
    timings["general_s"] = time.time() - t
    save_file(state_dict_fp16(general), str(out_dir / "synth_effnet_general.safetensors"))

    timings["total_s"] = time.time() - t0
    config = {
        "format": 1,
        "train": asdict(cfg),
        "torch_threads": torch.get_num_threads(),
        "clip": dict(CLIP_CONFIG),
        "target_arch": TARGET_ARCH,
        "concept_classes": list(vocab.CONCEPT_CLASSES),
        "general_classes": list(SHAPE_CLASSES),
        "files": {
            "synth-clip": "synth_clip.safetensors",
            "synth-effnet-concepts": "synth_effnet_concepts.safetensors",
            "synth-effnet-malignancy": "synth_effnet_malignancy.safetensors",
            "synth-effnet-general": "synth_effnet_general.safetensors",
        },
        "heldout": {
            "zero_shot_auc": _round(zs),
            "zero_shot_auc_mean_findings": _mean([zs[f] for f in vocab.FINDINGS]),
            "concepts_auc": _round(concept_auc),
            "concepts_auc_mean": _mean(list(concept_auc.values())),
            "malignancy_auc_vs_true": round(mal_auc, 4),
            "general_auc_mean": _mean(list(general_auc.values())),
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return config


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 4) if v == v else None) for k, v in d.items()}


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v == v]
    return round(float(np.mean(vals)), 4) if vals else None
