"""The published evaluation metrics of neuron labels against a ground truth (docs/methods.md,
"Evaluation as published"): CLIP-Dissect's final-layer protocol and MAMMI's list and similarity
measures, computed as their code computes them. Pure functions of ``LayerLabels``, the truth and
text encoders (callables ``list[str] -> [n, D]``); ``dissectkit evaluate`` and ``dissectkit bench``
call them.

- CLIP-Dissect (one true label per neuron: the first listed): ``top1`` / ``top5`` exact match;
  ``clip_cos``: the mean over neurons of the cosine between the CLIP text embeddings (L2-normalised) of
  the top-1 label and the truth; ``mpnet_cos``: the mean of the dot product of their MPNet sentence
  embeddings (the model normalises them); ``rank_mean`` / ``rank_median``: the truth's 1-based
  position in the neuron's ranking of every concept (known for ``rank_n`` neurons).
- MAMMI (the truth is a set; labels lower-cased first; a neuron without a concept predicts
  ``"none"``, as MAMMI writes it): ``hit_rate`` (a predicted concept is true), ``precision`` (true
  predicted / predicted), ``recall`` (true predicted / true), ``f1``, each a mean over neurons with
  its standard error ``sd / sqrt(n)``, ``sd`` with ddof = 0; ``<encoder>_pair_cos``: per neuron the mean
  cosine over every (predicted, true) pair (capped at 1; MPNet: the dot product), then the mean over
  neurons and its standard error.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dissectkit.base.errors import DataError
from dissectkit.labelling.evidence import LayerLabels

__all__ = [
    "COLUMNS",
    "ENCODERS",
    "TextEncoder",
    "Truth",
    "evaluate_layer",
    "mean_se",
    "read_truth",
    "sentence_encoder",
    "write_evaluation",
]

TextEncoder = Callable[[list[str]], Any]
ENCODERS = ("clip", "mpnet", "medclip")
"""The text spaces of the published metrics: CLIP ViT-B/16 (CLIP-Dissect and MAMMI), MPNet
``all-mpnet-base-v2`` (both), MedCLIP (MAMMI)."""
NONE_LABEL = "none"  # MAMMI's text for a neuron without a concept
SEPARATORS = "|"
COLUMNS = (
    "dissector", "target", "method", "layer", "n",
    "top1", "top5", "clip_cos", "mpnet_cos", "rank_mean", "rank_median", "rank_n",
    "hit_rate", "hit_rate_se", "precision", "precision_se", "recall", "recall_se", "f1", "f1_se",
    "medclip_pair_cos", "medclip_pair_cos_se", "clip_pair_cos", "clip_pair_cos_se", "mpnet_pair_cos", "mpnet_pair_cos_se",
)
"""The columns of ``evaluation.csv`` (one row per labelled layer with a truth)."""


@dataclass
class Truth:
    """True labels per ``(layer, unit)``, optionally per target (``""``: any target)."""

    labels: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)

    def of(self, target: str, layer: str) -> dict[int, list[str]]:
        """``unit -> labels`` of a layer of a target (rows without a target apply to every target)."""
        out = {u: t for (tg, la, u), t in self.labels.items() if la == layer and tg == ""}
        out.update({u: t for (tg, la, u), t in self.labels.items() if la == layer and tg == target})
        return out

    @property
    def layers(self) -> set[str]:
        return {la for _, la, _ in self.labels}


def read_truth(path: str | Path) -> Truth:
    """A truth CSV: columns ``layer``, ``unit`` and ``label`` (or ``labels``; several separated by
    ``|``), optionally ``target``. Every problem is a ``DataError`` naming the row."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"Truth file not found: {p}. Give a CSV with columns layer, unit, label.")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        head = [h.strip() for h in reader.fieldnames or []]
        column = "label" if "label" in head else "labels" if "labels" in head else None
        if column is None or "layer" not in head or "unit" not in head:
            raise DataError(f"{p}: the truth needs columns layer, unit and label (or labels); it has {', '.join(head) or 'none'}.")
        truth = Truth()
        for i, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(row.values()):
                continue
            try:
                unit = int(row["unit"])
            except ValueError:
                raise DataError(f"{p}, row {i}: unit {row['unit']!r} is not an integer.") from None
            labels = [t.strip() for t in row[column].split(SEPARATORS) if t.strip()]
            if not labels:
                raise DataError(f"{p}, row {i}: no label for layer {row['layer']!r}, unit {unit}.")
            truth.labels[(row.get("target", ""), row["layer"], unit)] = labels
    if not truth.labels:
        raise DataError(f"{p} holds no truth rows.")
    return truth


def mean_se(values: Sequence[float]) -> tuple[float | None, float | None]:
    """The mean and MAMMI's standard error ``np.std(values) / sqrt(n)`` (ddof = 0)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.pstdev(values) / math.sqrt(len(values))


class _Memo:
    """An encoder's embeddings, one call per distinct text, as float64 rows."""

    def __init__(self, encode: TextEncoder) -> None:
        self.encode = encode
        self.rows: dict[str, Any] = {}

    def __call__(self, texts: list[str]) -> Any:
        import torch

        new = [t for t in dict.fromkeys(texts) if t not in self.rows]
        if new:
            values = torch.as_tensor(self.encode(new)).detach().to("cpu", torch.float64)
            if values.ndim != 2 or values.shape[0] != len(new):
                raise DataError(f"A text encoder returned shape {tuple(values.shape)} for {len(new)} texts.")
            self.rows.update(zip(new, values, strict=True))
        return torch.stack([self.rows[t] for t in texts])


def _cos(a: Any, b: Any) -> Any:
    import torch

    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def evaluate_layer(labels: LayerLabels, truth: dict[int, list[str]], encoders: dict[str, TextEncoder] | None = None,
                   ranks: dict[int, int | None] | None = None, list_top: int | None = None) -> dict[str, Any]:
    """Every metric of one labelled layer over the neurons that have a truth (module docstring).
    ``ranks``: each neuron's 1-based rank of its (first) true label among every concept, when the
    caller re-scored the layer; otherwise it is read from the neuron's ranked list (unknown when the
    truth is not in it). ``list_top``: MAMMI's measures on the first ``list_top`` concepts only (e.g. a
    CLIP-Dissect top-k); default the whole list."""
    units = sorted(u for u in truth if u < len(labels.neurons))
    missing = sorted(u for u in truth if u >= len(labels.neurons))
    if missing:
        raise DataError(f"Truth names unit {missing[0]} of layer {labels.layer!r}, which has {len(labels.neurons)} neurons.")
    memo = {name: _Memo(enc) for name, enc in (encoders or {}).items() if enc is not None}
    out: dict[str, Any] = {"n": len(units)}
    if not units:
        return out
    first = [truth[u][0] for u in units]
    ranked = [[c for c, _ in labels.neurons[u]] for u in units]
    top1 = [r[0] if r else None for r in ranked]
    out["top1"] = statistics.fmean(float(p == t) for p, t in zip(top1, first, strict=True))
    out["top5"] = statistics.fmean(float(t in r[:5]) for r, t in zip(ranked, first, strict=True))
    for name in ("clip", "mpnet"):
        if name in memo:
            have = [i for i, p in enumerate(top1) if p is not None]
            sims = [0.0] * len(units)  # a neuron without a label counts 0
            if have:
                e_pred = memo[name]([str(top1[i]) for i in have])
                e_true = memo[name]([first[i] for i in have])
                values = _cos(e_pred, e_true) if name == "clip" else (e_pred * e_true).sum(-1)
                for i, v in zip(have, values.tolist(), strict=True):
                    sims[i] = v
            out[f"{name}_cos"] = statistics.fmean(sims)
    rank = [ranks.get(u) if ranks is not None else (r.index(t) + 1 if t in r else None)
            for u, r, t in zip(units, ranked, first, strict=True)]
    known = [float(r) for r in rank if r is not None]
    out["rank_n"] = len(known)
    if known:
        out["rank_mean"] = statistics.fmean(known)
        out["rank_median"] = statistics.median(known)
    # MAMMI: lower-cased lists; "none" for a neuron without a concept
    preds = [[c.lower() for c in r[:list_top]] or [NONE_LABEL] for r in ranked]
    trues = [[t.lower() for t in truth[u]] for u in units]
    hit, prec, rec, f1 = [], [], [], []
    for p, t in zip(preds, trues, strict=True):
        inter = len(set(p) & set(t))
        pr, re = inter / len(p), inter / len(t)
        hit.append(float(any(c in t for c in p)))
        prec.append(pr)
        rec.append(re)
        f1.append(0.0 if pr + re == 0 else 2 * pr * re / (pr + re))
    for name, values in (("hit_rate", hit), ("precision", prec), ("recall", rec), ("f1", f1)):
        out[name], out[f"{name}_se"] = mean_se(values)
    for name in ("medclip", "clip", "mpnet"):
        if name not in memo:
            continue
        per = []
        for p, t in zip(preds, trues, strict=True):
            e_p, e_t = memo[name](p), memo[name](t)
            if name == "mpnet":
                per.append(float((e_p @ e_t.T).mean()))
            else:
                cos = _cos(e_p.unsqueeze(1), e_t.unsqueeze(0)).clamp(max=1.0)
                per.append(float(cos.mean()))
        out[f"{name}_pair_cos"], out[f"{name}_pair_cos_se"] = mean_se(per)
    return out


def sentence_encoder(model: str | Path, device: str = "cpu") -> TextEncoder:
    """A sentence-transformers model (e.g. your copy of ``all-mpnet-base-v2``) loaded offline from a
    local folder or the Hugging Face cache: ``texts -> model.encode(texts)`` (as the published code
    calls it; the MPNet model normalises its output)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DataError("The MPNet metrics need sentence-transformers: pip install 'dissectkit[mpnet]'.") from None
    try:
        st = SentenceTransformer(str(model), device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any loading failure: name the model and the fix
        raise DataError(
            f"Cannot load the sentence-transformers model {model!s} offline ({type(exc).__name__}: {exc}). Give a local "
            "folder, or fetch it once: hf download sentence-transformers/all-mpnet-base-v2") from None

    def encode(texts: list[str]) -> Any:
        import torch

        return torch.as_tensor(st.encode(list(texts), convert_to_numpy=True))

    return encode


def write_evaluation(rows: list[dict[str, Any]], path: Path) -> Path:
    """``evaluation.csv``: one row per (dissector, target, method, layer), :data:`COLUMNS`."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(["" if r.get(c) is None else repr(r[c]) if isinstance(r.get(c), float) else r[c] for c in COLUMNS])
    return path
