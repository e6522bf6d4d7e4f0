"""``dissectkit synth train``: train synth-clip and the three EfficientNet targets, seeded, on CPU, into
float16 safetensors and ``synth_world.json`` (docs/synthetic.md, "Training")."""

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
MASK_GRID = (7, 4)  # the stride-16 grid of MODEL_INPUT; per-location finding targets of the auxiliary heads
DRIFT_LAYER = "blocks.6"  # the layer whose units the fine-tuning's planted drift swaps (one block, no skip)
DRIFT_PAIRS = 8  # pairs of its units swapped


@dataclass
class TrainConfig:
    """Sizes of one training run (``quick`` shrinks everything for tests)."""

    seed: int = 0
    n_train: int = 12000
    n_eval: int = 400
    clip_epochs: int = 16
    clip_batch: int = 48
    clip_lr: float = 3e-3
    concepts_epochs: int = 7
    malignancy_epochs: int = 2
    malignancy_train: int = 3000
    general_train: int = 3000
    general_epochs: int = 4
    batch: int = 48
    lr: float = 3e-3
    concept_weight: float = 1.0  # synth-clip: BCE of cos(image, concept name) against the labels
    concept_scale: float = 10.0  # ... at CLIP-Dissect's softmax scale a = 10, the scale WPMI reads
    null_texts: int = 24  # synth-clip: random-letter texts per batch that match no image
    mask_weight: float = 3.0  # synth-clip and concepts: per-location BCE against the findings' masks (training only)
    threads: int = 2  # torch threads (0 = torch default)
    workers: int = 2  # processes generating the training images

    @classmethod
    def quick(cls, seed: int = 0) -> TrainConfig:
        return cls(seed=seed, n_train=48, n_eval=40, clip_epochs=1, clip_batch=16, concepts_epochs=1,
                   malignancy_epochs=1, malignancy_train=32, general_train=16, general_epochs=1, batch=16, workers=1)


@dataclass
class MammoSet:
    """Generated images prepared for the models, with everything training needs about them."""

    x: Any  # float16 [n, 1, h, w]
    y: Any  # float32 [n, len(CONCEPT_CLASSES)]
    masks: Any  # bool [n, len(FINDINGS), *MASK_GRID]
    malignancy: Any  # float32 [n] (noisy label)
    malignancy_true: Any  # float32 [n]
    samples: list  # light samples (no pixels) for the reports


def _light(sample):
    """Keep what a report needs (attributes, finding concepts and locations), drop pixels and masks."""
    from dissectkit.synthetic.generator import Finding, MassFinding, Sample

    fs = [
        MassFinding(f.concepts, None, f.location, None) if isinstance(f, MassFinding) else Finding(f.concepts, None, f.location)
        for f in sample.findings
    ]
    return Sample(None, {}, sample.labels, sample.attrs, fs)


def _grid_masks(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Each finding's mask max-pooled onto ``MASK_GRID`` (cells as adaptive pooling draws them)."""
    out = np.zeros((len(vocab.FINDINGS), *MASK_GRID), bool)
    for j, f in enumerate(vocab.FINDINGS):
        m = masks.get(f)
        if m is None or not m.any():
            continue
        h, w = m.shape
        for gy in range(MASK_GRID[0]):
            rows = m[gy * h // MASK_GRID[0] : -(-(gy + 1) * h // MASK_GRID[0])]
            for gx in range(MASK_GRID[1]):
                out[j, gy, gx] = rows[:, gx * w // MASK_GRID[1] : -(-(gx + 1) * w // MASK_GRID[1])].any()
    return out


def _generate(seed: int, start: int, stop: int):
    """Images ``start..stop-1`` of generator ``seed``: model inputs, grid masks and light samples."""
    import torch

    from dissectkit.imaging.raw import minmax_unit
    from dissectkit.synthetic.generator import SynthMammoGenerator
    from dissectkit.synthetic.models import prepare_batch

    torch.set_num_threads(1)
    gen = SynthMammoGenerator(seed=seed)
    xs, masks, samples, chunk = [], [], [], []
    for i in range(start, stop):
        smp = gen.sample(i)
        chunk.append(minmax_unit(smp.image))
        masks.append(_grid_masks(smp.masks))
        samples.append(_light(smp))
        if len(chunk) == 256 or i == stop - 1:
            xs.append(prepare_batch(np.stack(chunk))[:, :1].to(torch.float16))
            chunk = []
    return torch.cat(xs), np.stack(masks), samples


def make_mammo_set(seed: int, n: int, workers: int = 1) -> MammoSet:
    """``n`` generated images (item ``i`` of generator ``seed``); ``workers`` spawned processes share
    the work (from a script, call it under ``if __name__ == "__main__":``), and the result does not
    depend on their number."""
    import torch

    bounds = np.linspace(0, n, max(min(workers, n // 64), 1) + 1).astype(int)
    parts = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    if len(parts) == 1:
        results = [_generate(seed, 0, n)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_generate, [seed] * len(parts), *zip(*parts, strict=True)))
    x = torch.cat([r[0] for r in results])
    samples = [s for r in results for s in r[2]]
    y = torch.tensor([concept_targets(s.labels) for s in samples], dtype=torch.float32)
    return MammoSet(
        x=x,
        y=y,
        masks=torch.from_numpy(np.concatenate([r[1] for r in results])),
        malignancy=torch.tensor([float(s.labels["malignancy"]) for s in samples]),
        malignancy_true=torch.tensor([float(s.labels["malignancy_true"]) for s in samples]),
        samples=samples,
    )


def concept_targets(labels: dict[str, Any]) -> list[float]:
    """Multi-hot over ``vocab.CONCEPT_CLASSES``: findings present and the one composition class."""
    comp = vocab.COMPOSITION_LETTERS.index(labels["composition"])
    return [float(labels[f]) for f in vocab.FINDINGS] + [float(i == comp) for i in range(4)]


def make_shapes_set(seed: int, n: int):
    import torch

    from dissectkit.imaging.raw import minmax_unit
    from dissectkit.synthetic.models import prepare_batch
    from dissectkit.synthetic.shapes import shape_image

    imgs, labels = zip(*(shape_image(seed, i) for i in range(n)), strict=True)
    x = torch.cat([prepare_batch(np.stack([minmax_unit(im) for im in imgs[i : i + 256]]))[:, :1].to(torch.float16)
                   for i in range(0, n, 256)])
    return x, torch.tensor(np.stack(labels))


def _expand(xb):
    import torch

    return xb.float().expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


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


_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def null_texts(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` texts of 1-3 random letter strings that describe no image (docs/synthetic.md, "Training")."""
    out = []
    for _ in range(n):
        words = ["".join(rng.choice(_LETTERS, int(rng.integers(3, 10)))) for _ in range(int(rng.integers(1, 4)))]
        out.append(" ".join(words))
    return out


def _prior_logits(y) -> Any:
    """Log-odds of each column's positive rate: the starting bias of a multi-label head."""
    import torch

    p = y.float().mean(0).clamp(0.01, 0.99)
    return torch.log(p / (1 - p))


class MaskHead:
    """Training-only auxiliary head: a 1x1 convolution on a hooked stride-16 feature map predicting, per
    location, which findings' masks touch it (discarded after training)."""

    def __init__(self, module, channels: int) -> None:
        import torch

        self.conv = torch.nn.Conv2d(channels, len(vocab.FINDINGS), 1)
        torch.nn.init.constant_(self.conv.bias, -4.0)
        from dissectkit.nn.capture import Capture

        self.capture = Capture({"features": module})

    def parameters(self):
        return self.conv.parameters()

    def loss(self, masks):
        import torch.nn.functional as F

        logits = self.conv(self.capture.outputs["features"])
        if tuple(logits.shape[-2:]) != tuple(masks.shape[-2:]):
            raise RuntimeError(f"mask grid {tuple(masks.shape[-2:])} does not match the features {tuple(logits.shape[-2:])}")
        return F.binary_cross_entropy_with_logits(logits, masks.float())

    def remove(self) -> None:
        self.capture.remove()


def _batches(rng: np.random.Generator, n: int, batch: int) -> list[np.ndarray]:
    perm = rng.permutation(n)
    return [perm[b * batch : (b + 1) * batch] for b in range(max(n // batch, 1))]


def train_clip(cfg: TrainConfig, data: MammoSet, log: Callable[[str], None]):
    """Contrastive (image, report text) training with semantic matching, plus the concept names'
    BCE (the canonical texts as a multi-label head) and the mask head on the image tower."""
    import torch
    import torch.nn.functional as F

    from dissectkit.synthetic.models import CLIP_CONFIG, build_clip, build_tokenizer

    torch.manual_seed(cfg.seed)
    model = build_clip(CLIP_CONFIG).to(memory_format=torch.channels_last)
    stage3 = model.image_encoder.features[-7]  # end of the stride-16 stage
    mask_head = MaskHead(stage3, int(CLIP_CONFIG["image_widths"][2]))
    concept_bias = torch.nn.Parameter(_prior_logits(data.y))
    params = [*model.parameters(), *mask_head.parameters(), concept_bias]
    opt = torch.optim.AdamW(params, lr=cfg.clip_lr, weight_decay=0.01)
    tok = build_tokenizer(CLIP_CONFIG)
    concept_ids, concept_offsets = (torch.from_numpy(a) for a in tok.batch(list(vocab.CONCEPT_CLASSES)))
    x, samples = data.x, data.samples
    have = [frozenset([f for f in vocab.FINDINGS if s.labels[f]] + [s.labels["density"]]) for s in samples]
    rng = np.random.default_rng([cfg.seed, 1])
    null_rng = np.random.default_rng([cfg.seed, 3])
    total = max(len(x) // cfg.clip_batch, 1) * cfg.clip_epochs
    step = 0
    model.train()
    for epoch in range(cfg.clip_epochs):
        running = np.zeros(3)
        batches = _batches(rng, len(x), cfg.clip_batch)
        for idx in batches:
            caps = [_caption(samples[i], np.random.default_rng([cfg.seed, epoch, int(i)])) for i in idx]
            # semantic matching (as MedCLIP): image i and text j match when i has every concept j states
            match = torch.tensor([[float(c <= have[i]) for _, c in caps] for i in idx])
            nulls = null_texts(null_rng, cfg.null_texts)
            ids, offsets = tok.batch([t for t, _ in caps] + nulls)
            _cosine_lr(opt, cfg.clip_lr, step, total)
            img = model.encode_image(_expand(x[idx]))
            txt = model.encode_text(torch.from_numpy(ids), torch.from_numpy(offsets))
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
            # image -> text over the captions and the null texts; text -> image over the captions
            to_text = F.pad(match, (0, len(nulls))) / match.sum(1, keepdim=True)
            to_image = match / match.sum(0, keepdim=True)
            contrastive = -((to_text * F.log_softmax(logits, 1)).sum(1).mean()
                            + (to_image * F.log_softmax(logits[:, : len(caps)], 0)).sum(0).mean()) / 2
            names = model.encode_text(concept_ids, concept_offsets)
            # the concept names as a multi-label head; the null texts join it as names no image has
            # (at the mean bias, so only a low similarity to every image satisfies them)
            heads = torch.cat([names, txt[len(caps):]])
            bias = torch.cat([concept_bias, concept_bias.detach().mean().expand(len(nulls))])
            targets = F.pad(data.y[idx], (0, len(nulls)))
            concept = F.binary_cross_entropy_with_logits(cfg.concept_scale * img @ heads.T + bias, targets)
            masks = mask_head.loss(data.masks[idx])
            loss = contrastive + cfg.concept_weight * concept + cfg.mask_weight * masks
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += [contrastive.item(), concept.item(), masks.item()]
            step += 1
        r = running / len(batches)
        log(f"  synth-clip epoch {epoch + 1}/{cfg.clip_epochs}: contrastive {r[0]:.3f}, concepts {r[1]:.4f}, masks {r[2]:.4f}")
    mask_head.remove()
    return model.eval()


def train_classifier(model, x, y, epochs: int, batch: int, lr: float, seed: int, log, name: str,
                     mask_head: MaskHead | None = None, masks=None, mask_weight: float = 1.0):
    """Multi-label BCE training (AdamW, cosine schedule); the classifier bias starts at the labels'
    log-odds; with ``mask_head``, its per-location loss on ``masks`` is added."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        model.get_classifier().bias.copy_(_prior_logits(y.reshape(len(y), -1)))
    params = [*model.parameters(), *(mask_head.parameters() if mask_head else [])]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    total = max(len(x) // batch, 1) * epochs
    rng = np.random.default_rng([seed, 2])
    step = 0
    model.train()
    for epoch in range(epochs):
        running = np.zeros(2)
        batches = _batches(rng, len(x), batch)
        for idx in batches:
            _cosine_lr(opt, lr, step, total)
            out = model(_expand(x[idx]))
            loss = F.binary_cross_entropy_with_logits(out, y[idx].reshape(out.shape))
            aux = mask_head.loss(masks[idx]) if mask_head else torch.zeros(())
            opt.zero_grad()
            (loss + mask_weight * aux).backward()
            opt.step()
            running += [loss.item(), aux.item()]
            step += 1
        r = running / len(batches)
        log(f"  {name} epoch {epoch + 1}/{epochs}: loss {r[0]:.4f}" + (f", masks {r[1]:.4f}" if mask_head else ""))
    if mask_head:
        mask_head.remove()
    return model.eval()


def predict(model, x, batch: int = 256):
    import torch

    with torch.no_grad():
        return torch.cat([model(_expand(x[i : i + batch])) for i in range(0, len(x), batch)])


def zero_shot_auc(model, x, labels: list[dict[str, Any]], batch: int = 256) -> dict[str, float]:
    """Per finding (and composition class): AUC of cos(image, concept text) for presence."""
    import torch

    from dissectkit.synthetic.models import CLIP_CONFIG, build_tokenizer

    tok = build_tokenizer(CLIP_CONFIG)
    with torch.no_grad():
        img = torch.cat([model.encode_image(_expand(x[i : i + batch])) for i in range(0, len(x), batch)])
        ids, offsets = tok.batch(list(vocab.CONCEPT_CLASSES))
        txt = model.encode_text(torch.from_numpy(ids), torch.from_numpy(offsets))
    sims = (img @ txt.T).numpy()
    y = np.array([concept_targets(lab) for lab in labels])
    return {c: auc(sims[:, j], y[:, j]) for j, c in enumerate(vocab.CONCEPT_CLASSES)}


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
    data = make_mammo_set(TRAIN_SEED_OFFSET + cfg.seed, cfg.n_train, cfg.workers)
    held = make_mammo_set(EVAL_SEED_OFFSET + cfg.seed, cfg.n_eval, cfg.workers)
    timings["data_s"] = time.time() - t0

    t = time.time()
    log("Training synth-clip (contrastive, image vs report) ...")
    clip = train_clip(cfg, data, log)
    zs = zero_shot_auc(clip, held.x, [s.labels for s in held.samples])
    log(f"  synth-clip held-out zero-shot AUC, mean over findings: {_mean([zs[f] for f in vocab.FINDINGS])}")
    timings["clip_s"] = time.time() - t
    save_file(state_dict_fp16(clip), str(out_dir / "synth_clip.safetensors"))

    t = time.time()
    log(f"Training synth-effnet-concepts ({TARGET_ARCH}, {len(vocab.CONCEPT_CLASSES)} outputs) ...")
    torch.manual_seed(cfg.seed)
    concepts = build_effnet(len(vocab.CONCEPT_CLASSES))
    head = MaskHead(concepts.blocks[4], concepts.blocks[4][-1].bn3.num_features)
    concepts = train_classifier(concepts, data.x, data.y, cfg.concepts_epochs, cfg.batch, cfg.lr, cfg.seed, log, "concepts",
                                mask_head=head, masks=data.masks, mask_weight=cfg.mask_weight)
    pe = predict(concepts, held.x).numpy()
    concept_auc = {c: auc(pe[:, j], held.y[:, j].numpy()) for j, c in enumerate(vocab.CONCEPT_CLASSES)}
    log(f"  concepts held-out AUC, mean over outputs: {_mean(list(concept_auc.values()))}")
    timings["concepts_s"] = time.time() - t
    save_file(state_dict_fp16(concepts), str(out_dir / "synth_effnet_concepts.safetensors"))

    t = time.time()
    log("Fine-tuning synth-effnet-malignancy from the concepts backbone ...")
    torch.manual_seed(cfg.seed + 1)
    malignancy = build_effnet(1)
    backbone = {k: v for k, v in concepts.state_dict().items() if not k.startswith("classifier.")}
    malignancy.load_state_dict(backbone, strict=False)
    nm = min(cfg.malignancy_train, len(data.x))
    malignancy = train_classifier(malignancy, data.x[:nm], data.malignancy[:nm], cfg.malignancy_epochs, cfg.batch, cfg.lr / 3,
                                  cfg.seed + 1, log, "malignancy")
    planted, drifted = plant_drift(malignancy.state_dict(), seed=cfg.seed + 1)
    malignancy.load_state_dict(planted)
    mal_auc = auc(predict(malignancy, held.x).numpy()[:, 0], held.malignancy_true.numpy())
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
        "planted_drift": {"target": "synth-effnet-malignancy", "layer": DRIFT_LAYER, "units": drifted},
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


def plant_drift(state: dict[str, Any], pairs: int = DRIFT_PAIRS, seed: int = 0) -> tuple[dict[str, Any], list[int]]:
    """Planted neuron drift: swap ``pairs`` random pairs of ``DRIFT_LAYER``'s output units of a
    fine-tuned tinynet_e state dict (its projection conv's and batch norm's rows, the head conv's input
    columns), so the network computes the same function while each swapped unit now carries its
    partner's feature: the units whose concept the fine-tuning changed are known. Returns the new
    state dict and the swapped units, sorted."""
    import torch

    pre, head = f"{DRIFT_LAYER}.0.", "conv_head.weight"
    n = state[pre + "conv_pwl.weight"].shape[0]
    chosen = np.random.default_rng(seed).choice(n, size=2 * pairs, replace=False)
    perm = torch.arange(n)
    perm[torch.from_numpy(chosen[:pairs])], perm[torch.from_numpy(chosen[pairs:])] = (
        torch.from_numpy(chosen[pairs:]), torch.from_numpy(chosen[:pairs]))
    out = dict(state)
    for key in ("conv_pwl.weight", "bn3.weight", "bn3.bias", "bn3.running_mean", "bn3.running_var"):
        out[pre + key] = state[pre + key][perm].clone()
    out[head] = state[head][:, perm].clone()
    return out, sorted(int(u) for u in chosen)


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 4) if v == v else None) for k, v in d.items()}


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v == v]
    return round(float(np.mean(vals)), 4) if vals else None
