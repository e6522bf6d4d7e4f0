"""Mammo-FActOR (feature attribution of textual representation), the Mammo-CLIP paper's method:
per-attribute projection heads map every channel's spatial map into the dissector's text space
(docs/methods.md, "Mammo-FActOR").

Facts followed (shared/docs/methods.md): one head per attribute, ``Linear(HW, HW) -> ReLU ->
Linear(HW, D)`` applied to every channel's flattened map; an image's similarity to an attribute is
the maximum over channels of the cosine between region embedding and attribute text embedding,
divided by the temperature 0.07; contrastive loss over the batch's positive image-attribute pairs;
AdamW, lr 1e-4, 20 epochs, batch 8; training images: those with at least one attribute; an
attribute's text embedding is the mean of the L2-normalised embeddings of its prompts. Chosen here
(the release has no code for them), each a parameter: the form of the contrastive loss, the image
labels (from the probe's masks or boxes), the channel ranking, the heatmaps and their threshold.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, field_validator

from dissectkit.base.contract import Method
from dissectkit.base.errors import EvidenceError
from dissectkit.base.params import Params
from dissectkit.builtin.methods._common import device_of, encode
from dissectkit.host.manager import get_host
from dissectkit.labelling.evidence import Evidence, LayerLabels
from dissectkit.labelling.grounding import mask_classes_for
from dissectkit.labelling.spatial_grid import QuantileGrid, derived, upsample
from dissectkit.labelling.streaming import Moments

_HEADS_BUDGET = 1 << 26  # floats of the heads' intermediate tensors at once (256 MB)


class FactorParams(Params):
    """``mammo-factor`` parameters; the training ones default to the published notebook's."""

    attributes: list[str] | None = Field(None, description="attribute texts; default: every concept of the set that has masks in the probe")
    prompts: list[str] = Field(default_factory=lambda: ["{}"], min_length=1,
                               description="templates ('{}' = the attribute); its text embedding is the mean of theirs")
    mask_classes: dict[str, str | list[str]] = Field(
        default_factory=dict, description="attribute, subcategory or category -> the probe's mask class(es) that show it "
        "(default: the mask class named like the attribute, case-insensitive)")
    train_on: Literal["positive", "all"] = Field("positive", description="'positive': images with at least one attribute (published); 'all' annotated images")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=2)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0, description="AdamW's (torch's default)")
    temperature: float = Field(0.07, gt=0)
    hidden: int | None = Field(None, ge=1, description="width of the heads' hidden layer; default H x W (published)")
    ranking: Literal["contribution", "contrast", "mean", "argmax"] = Field(
        "contribution", description="channel score per attribute: its mean contribution to the attribute's heatmap "
        "((1 + cosine) / 2 x the map's mean) on images with it minus without ('contribution'), the same for the cosine "
        "alone ('contrast'), the mean cosine on images with it ('mean'), or the share of those images where the channel "
        "is the head's maximum ('argmax')")
    top_m: int = Field(5, ge=1, description="attributes kept per channel")
    min_score: float = Field(0.0, description="a channel's attributes score above this; none: no concept")
    heatmap_channels: int = Field(5, ge=1, description="top channels of an attribute summed into its heatmaps")
    heatmap_images: int = Field(6, ge=0, description="top images per attribute kept with their heatmaps (report)")
    pointing_tolerance: float = Field(0.5, ge=0, description="the heatmaps' pointing game's tolerance in cells of the "
                                      "layer's map (as the grounding columns': 0.5, the peak's own cell; 0: the peak pixel)")
    heatmap_threshold: float = Field(0.5, gt=0, le=1, description="heatmap level (fraction of its maximum) whose region is compared with the masks")
    resolution: int | None = Field(112, ge=1, description="longer side of the grid heatmaps are compared with masks on (netdissect's)")
    max_memory_mb: float = Field(1024.0, gt=0, description="training maps held at once; more are streamed through a shuffle buffer")
    cache: bool = Field(True, description="keep the trained heads in the cache next to the spatial maps")

    @field_validator("prompts")
    @classmethod
    def _placeholder(cls, v: list[str]) -> list[str]:
        for p in v:
            if "{}" not in p:
                raise ValueError(f"prompt {p!r} has no '{{}}' placeholder for the attribute")
        return v


class Heads:
    """The per-attribute heads as stacked tensors: ``W1 [A, HW, Hd]``, ``b1 [A, Hd]``, ``W2 [A, Hd, D]``,
    ``b2 [A, D]`` (``Linear(HW, Hd) -> ReLU -> Linear(Hd, D)`` for each attribute)."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.W1, self.b1, self.W2, self.b2 = (tensors[k] for k in ("W1", "b1", "W2", "b2"))

    @classmethod
    def init(cls, A: int, hw: int, hidden: int, D: int, seed: int, device: str) -> Heads:
        """``nn.Linear``'s initialisation (uniform in ``+-1/sqrt(fan_in)``), from ``seed``."""
        import torch

        gen = torch.Generator().manual_seed(seed)

        def uniform(shape: tuple[int, ...], fan_in: int):
            bound = 1.0 / math.sqrt(fan_in)
            return ((torch.rand(shape, generator=gen) * 2 - 1) * bound).to(device)

        return cls({"W1": uniform((A, hw, hidden), hw), "b1": uniform((A, hidden), hw),
                    "W2": uniform((A, hidden, D), hidden), "b2": uniform((A, D), hidden)})

    def tensors(self) -> dict[str, Any]:
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}

    def cosines(self, X, T):
        """``[B, A, K]``: cosine of head a's embedding of every channel's map (``X [B, K, HW]``) with
        the attribute's text embedding (``T [A, D]``, unit rows), in groups of attributes."""
        import torch

        B, K, _ = X.shape
        A, hidden, D = self.W2.shape
        step = max(1, _HEADS_BUDGET // max(1, B * K * max(hidden, D)))
        parts = []
        for a0 in range(0, A, step):
            sl = slice(a0, a0 + step)
            H = torch.relu(torch.einsum("bkh,ahj->bakj", X, self.W1[sl]) + self.b1[sl][None, :, None, :])
            E = torch.einsum("bakj,ajd->bakd", H, self.W2[sl]) + self.b2[sl][None, :, None, :]
            E = torch.nn.functional.normalize(E, dim=-1)
            parts.append(torch.einsum("bakd,ad->bak", E, T[sl]))
        return torch.cat(parts, 1)


def heat_weight(cos):
    """A channel's weight in an attribute's heatmap: its head's cosine mapped to ``[0, 1]``."""
    return (1 + cos) / 2


def contrastive_loss(logits, positive):
    """The loss over a batch's positive image-attribute pairs (``logits [B, A]``, ``positive [B, A]``).

    Each positive pair ``(i, a)`` is contrasted in both directions against the pairs that are not
    positive: image ``i`` against the batch's images without ``a``, and attribute ``a`` against the
    attributes image ``i`` lacks (other positives are left out of the denominators, so positives never
    compete); ``-log(e^l / (e^l + sum e^negatives))`` averaged over the two directions and the pairs.
    ``None`` when the batch has no positive pair."""
    import torch

    if not bool(positive.any()):
        return None
    neg_inf = torch.full_like(logits, float("-inf"))
    neg = torch.where(positive, neg_inf, logits)
    per_attr = torch.logsumexp(neg, dim=0, keepdim=True).expand_as(logits)  # images without a
    per_image = torch.logsumexp(neg, dim=1, keepdim=True).expand_as(logits)  # attributes i lacks
    img = torch.logaddexp(logits, per_attr) - logits
    att = torch.logaddexp(logits, per_image) - logits
    return ((img + att) / 2)[positive].mean()


class MammoFactor(Method):
    """``mammo-factor``: trains the heads on the layer's cached spatial maps, then labels each channel
    with the attributes its heads map it closest to (``ranking``) and keeps, per attribute, its top
    channels, top images and heatmaps in ``LayerLabels.extra["attributes"]``."""

    name = "mammo-factor"
    needs_masks = True  # the images' attribute labels come from the probe's masks or boxes

    def __init__(self, params: FactorParams, ctx: Any) -> None:
        self.params = params
        self.device = getattr(ctx, "device", "cpu")

    # ---- reading the evidence
    def _rows(self, evidence: Evidence) -> tuple[list[frozenset[str] | None], tuple[int, int], int]:
        """Each row's mask classes with a non-empty mask (``None``: not annotated), the maps' size and K."""
        import numpy as np

        if evidence.spatial_maps is None:
            raise EvidenceError(
                f"mammo-factor cannot label layer {evidence.layer!r}: the probe has no masks, and the images' attribute "
                "labels come from its masks or boxes. Use a probe with masks or boxes ("
                f"{', '.join(get_host().registry.masked_probes()) or 'none installed'}).")
        rows: list[frozenset[str] | None] = []
        size, K = (1, 1), 0
        for batch in evidence.spatial_maps():
            if batch.maps.ndim != 4 or len(batch.masks) != batch.maps.shape[0]:
                raise EvidenceError(f"Layer {evidence.layer!r}: spatial maps must be [B, K, h, w] with one mask entry per image.")
            size, K = tuple(batch.maps.shape[-2:]), int(batch.maps.shape[1])
            rows += [None if m is None else frozenset(c for c, v in m.items() if np.asarray(v).any()) for m in batch.masks]
        if len(rows) != evidence.n_images:
            raise EvidenceError(f"Layer {evidence.layer!r}: the spatial maps cover {len(rows)} images, the activations {evidence.n_images}.")
        return rows, size, K  # type: ignore[return-value]

    def _attributes(self, evidence: Evidence, rows: list[frozenset[str] | None]) -> tuple[list[str], dict[str, list[str]], list[str]]:
        """The attributes trained (with their mask classes) and those left out (no masks, no positive image)."""
        available = set().union(*(r for r in rows if r is not None))
        concepts = {c.text: c for c in evidence.concept_objects}
        wanted = self.params.attributes or list(concepts)
        classes = {a: mask_classes_for(concepts.get(a, a), available, self.params.mask_classes) for a in wanted}
        keep = [a for a in wanted if classes[a]]
        if not keep:
            raise EvidenceError(
                f"mammo-factor, layer {evidence.layer!r}: no attribute has masks in the probe (mask classes: "
                f"{', '.join(sorted(available)) or 'none'}). Name attributes after mask classes or map them with the "
                "method's `mask_classes` parameter.")
        return keep, {a: classes[a] for a in keep}, [a for a in wanted if not classes[a]]

    def _text(self, evidence: Evidence, attributes: list[str], device: str):
        """``[A, D]``: the mean of each attribute's L2-normalised prompt embeddings, normalised."""
        import torch

        P = len(self.params.prompts)
        texts = [p.format(a) for p in self.params.prompts for a in attributes]
        T = encode(evidence, texts, device).reshape(P, len(attributes), -1).mean(0)
        return torch.nn.functional.normalize(T, dim=1)

    def _batches(self, evidence: Evidence, keep, flat: int, device: str) -> Iterator[tuple[Any, Any]]:
        """``(maps [b, K, HW] float32, rows [b])`` of the rows marked in ``keep``, in stream order."""
        import torch

        start = 0
        for batch in evidence.spatial_maps():
            n = batch.maps.shape[0]
            sel = keep[start : start + n].nonzero().flatten()
            if sel.numel():
                X = torch.as_tensor(batch.maps)[sel].reshape(sel.numel(), -1, flat)
                yield X.to(device, torch.float32), sel + start
            start += n

    # ---- training
    def _train(self, evidence: Evidence, Y, train, T, K: int, hw: int, device: str):
        """The trained heads (and the mean loss of each epoch) on the rows marked in ``train``."""
        import torch

        p = self.params
        A, D = T.shape
        gen = torch.Generator().manual_seed(int(evidence.seed))
        heads = Heads.init(A, hw, p.hidden or hw, D, int(evidence.seed), device)
        params = [t.requires_grad_() for t in heads.tensors().values()]
        opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
        capacity = max(p.batch_size, int(p.max_memory_mb * 2**20) // max(1, K * hw * 4))
        held = None
        if int(train.sum()) <= capacity:  # every training map fits: read once, reshuffled each epoch
            parts = list(self._batches(evidence, train, hw, "cpu"))
            held = (torch.cat([x for x, _ in parts]), torch.cat([r for _, r in parts]))
        losses = []
        for _ in range(p.epochs):
            total, steps = 0.0, 0
            for X, rows in self._shuffled(evidence, train, hw, capacity, gen, held):
                for s in range(0, X.shape[0], p.batch_size):
                    xb, rb = X[s : s + p.batch_size].to(device), rows[s : s + p.batch_size]
                    logits = heads.cosines(xb, T).amax(-1) / p.temperature
                    loss = contrastive_loss(logits, Y[rb].to(device))
                    if loss is None:
                        continue
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total, steps = total + float(loss.detach()), steps + 1
            losses.append(total / max(1, steps))
        return Heads({k: v.detach() for k, v in heads.tensors().items()}), losses

    def _shuffled(self, evidence, train, hw: int, capacity: int, gen, held) -> Iterator[tuple[Any, Any]]:
        """One epoch's training rows in a seeded random order: all of them (``held``), else the stream
        through a shuffle buffer of ``capacity`` rows."""
        import torch

        if held is not None:
            order = torch.randperm(held[0].shape[0], generator=gen)
            yield held[0][order], held[1][order]
            return
        xs: list[Any] = []
        rs: list[Any] = []
        for X, rows in self._batches(evidence, train, hw, "cpu"):
            xs.append(X)
            rs.append(rows)
            if sum(x.shape[0] for x in xs) >= capacity:
                Xc, Rc = torch.cat(xs), torch.cat(rs)
                order = torch.randperm(Xc.shape[0], generator=gen)
                yield Xc[order], Rc[order]
                xs, rs = [], []
        if xs:
            Xc, Rc = torch.cat(xs), torch.cat(rs)
            order = torch.randperm(Xc.shape[0], generator=gen)
            yield Xc[order], Rc[order]

    # ---- labelling
    def label(self, evidence: Evidence) -> LayerLabels:
        import torch

        p = self.params
        device = device_of(self, evidence)
        rows, (h, w), K = self._rows(evidence)
        hw = h * w
        attributes, classes, left_out = self._attributes(evidence, rows)
        known = torch.tensor([r is not None for r in rows], dtype=torch.bool)
        Y = torch.tensor([[r is not None and bool(r & set(classes[a])) for a in attributes] for r in rows],
                         dtype=torch.bool).reshape(len(rows), len(attributes))
        positives = Y.sum(0)
        trained = [a for j, a in enumerate(attributes) if positives[j] > 0]
        if not trained:
            raise EvidenceError(f"mammo-factor, layer {evidence.layer!r}: no annotated image shows any of {attributes}.")
        idx = [attributes.index(a) for a in trained]
        left_out += [a for a in attributes if a not in trained]
        attributes, Y = trained, Y[:, idx]
        T = self._text(evidence, attributes, device)
        train = known & (Y.any(1) if p.train_on == "positive" else torch.ones_like(known))
        settings = {**p.model_dump(exclude={"cache", "top_m", "min_score", "ranking", "heatmap_channels",
                                            "heatmap_images", "heatmap_threshold", "pointing_tolerance", "resolution", "attributes"}),
                    "attributes": attributes, "classes": [classes[a] for a in attributes], "seed": int(evidence.seed),
                    "texts": hashlib.sha256(T.cpu().numpy().tobytes()).hexdigest()}

        def fit() -> dict[str, Any]:
            heads, losses = self._train(evidence, Y, train, T, K, hw, device)
            return {**heads.tensors(), "loss": torch.tensor(losses)}

        fitted = derived(evidence.spatial_maps, "mammo-factor-heads", settings, fit) if p.cache else fit()
        heads = Heads({k: v.to(device) for k, v in fitted.items() if k != "loss"})
        scores, image_scores, dead = self._scores(evidence, heads, T, Y, known, hw, device)
        neurons, reasons = self._labels(scores, attributes, dead)
        extra = {
            "attributes": self._attribute_views(evidence, heads, T, scores, image_scores, attributes, classes, Y, hw, device),
            "left_out": left_out,
            "loss": [float(v) for v in fitted["loss"].tolist()],
            "trained_on": int(train.sum()),
        }
        return LayerLabels(layer=evidence.layer, method=self.name, params=p.model_dump(), neurons=neurons,
                           reasons=reasons, extra=extra)

    def _scores(self, evidence, heads: Heads, T, Y, known, hw: int, device: str):
        """``(channel scores [A, K], image scores [N, A] (NaN: not annotated), dead [K])``."""
        import torch

        A = T.shape[0]
        sum_pos = sum_neg = argmax = None
        image = torch.full((Y.shape[0], A), float("nan"))
        moments = None
        with torch.no_grad():
            for X, rows in self._batches(evidence, known, hw, device):
                cos = heads.cosines(X, T)  # [b, A, K]
                y = Y[rows].to(device).float()  # [b, A]
                if self.params.ranking == "contribution":
                    cos_rank = heat_weight(cos) * X.mean(-1).unsqueeze(1)
                else:
                    cos_rank = cos
                sp = torch.einsum("ba,bak->ak", y, cos_rank)
                sn = torch.einsum("ba,bak->ak", 1 - y, cos_rank)
                best = torch.nn.functional.one_hot(cos.argmax(-1), cos.shape[-1]).float()  # [b, A, K]
                am = torch.einsum("ba,bak->ak", y, best)
                sum_pos = sp if sum_pos is None else sum_pos + sp
                sum_neg = sn if sum_neg is None else sum_neg + sn
                argmax = am if argmax is None else argmax + am
                image[rows] = (cos.amax(-1) / self.params.temperature).cpu()
                flat = X.transpose(0, 1).reshape(X.shape[1], -1).T
                moments = Moments.of(flat) if moments is None else moments.add(flat)
        assert sum_pos is not None and sum_neg is not None and argmax is not None and moments is not None
        n_pos = Y[known].sum(0).to(device).float().unsqueeze(1)
        n_neg = (~Y[known]).sum(0).to(device).float().unsqueeze(1)
        mean_pos = sum_pos / n_pos.clamp_min(1)
        ranking = self.params.ranking
        if ranking == "mean":
            S = mean_pos
        elif ranking == "argmax":
            S = argmax / n_pos.clamp_min(1)
        else:
            S = mean_pos - torch.where(n_neg > 0, sum_neg / n_neg.clamp_min(1), torch.zeros_like(mean_pos))
        return S.cpu(), image, moments.constant.cpu()

    def _labels(self, S, attributes: list[str], dead):
        """Each channel's attributes scoring above ``min_score``, best first (ties: attribute order)."""
        import torch

        neurons: list[list[tuple[str, float]]] = []
        reasons: dict[int, str] = {}
        St = S.T  # [K, A]
        order = torch.sort(St, dim=1, descending=True, stable=True).indices[:, : self.params.top_m]
        for k in range(St.shape[0]):
            if bool(dead[k]):
                neurons.append([])
                reasons[k] = "dead"
                continue
            ranked = [(attributes[j], float(St[k, j])) for j in order[k].tolist() if float(St[k, j]) > self.params.min_score]
            neurons.append(ranked)
            if not ranked:
                reasons[k] = "no_match"
        return neurons, reasons

    def _attribute_views(self, evidence, heads: Heads, T, S, image, attributes, classes, Y, hw: int, device: str) -> list[dict[str, Any]]:
        """Per attribute: its top channels, its top images with their heatmaps, and how well the
        heatmaps localise it (pointing and IoU with the masks over the top images showing it)."""
        import numpy as np
        import torch

        p = self.params
        n_ch = min(p.heatmap_channels, S.shape[1])
        channels = torch.sort(S, dim=1, descending=True, stable=True).indices[:, :n_ch]  # [A, n]
        scores = torch.nan_to_num(image, nan=float("-inf"))
        n_img = min(p.heatmap_images, int(torch.isfinite(scores[:, 0]).sum()) if scores.numel() else 0)
        top = torch.sort(scores, dim=0, descending=True, stable=True).indices[:n_img].T if n_img else torch.zeros((len(attributes), 0), dtype=torch.long)
        wanted: dict[int, list[int]] = {}
        for a in range(len(attributes)):
            for r in top[a].tolist():
                wanted.setdefault(r, []).append(a)
        maps: dict[tuple[int, int], tuple[np.ndarray, dict[str, Any]]] = {}
        grid = QuantileGrid(p, who="mammo-factor")
        start = 0
        with torch.no_grad():
            for batch in evidence.spatial_maps():
                n = batch.maps.shape[0]
                for b in range(n):
                    attrs = wanted.get(start + b)
                    if not attrs:
                        continue
                    X = torch.as_tensor(batch.maps[b : b + 1]).to(device, torch.float32)
                    cos = heads.cosines(X.reshape(1, X.shape[1], hw), T)[0]  # [A, K]
                    for a in attrs:
                        ks = channels[a]
                        weight = heat_weight(cos[a, ks])
                        heat = (weight[:, None, None] * X[0, ks].clamp_min(0)).sum(0)
                        maps[(a, start + b)] = (heat.cpu().numpy(), self._localise(heat, batch.masks[b], classes[attributes[a]], grid))
                start += n
        index = evidence.image_index
        out = []
        for a, name in enumerate(attributes):
            images = []
            for r in top[a].tolist():
                heat, loc = maps[(a, r)]
                images.append({
                    "row": r, "index": int(index[r]) if index is not None else None,
                    "score": float(image[r, a]), "present": bool(Y[r, a]),
                    "heatmap": np.round(heat.astype(np.float64), 5).tolist(), **loc,
                })
            shown = [i for i in images if i["present"]]
            out.append({
                "attribute": name, "mask_classes": classes[name], "positives": int(Y[:, a].sum()),
                "channels": [[int(k), float(S[a, k])] for k in channels[a].tolist()],
                "images": images,
                "pointing": float(np.mean([i["pointing"] for i in shown])) if shown else None,
                "iou": float(np.mean([i["iou"] for i in shown])) if shown else None,
            })
        return out

    def _localise(self, heat, masks: dict[str, Any] | None, classes: list[str], grid: QuantileGrid) -> dict[str, Any]:
        """The heatmap on the masks' comparison grid: does its peak fall in the attribute's masks
        (``pointing``, with the grounding columns' tolerance of ``pointing_tolerance`` cells), and the
        IoU of its region above ``heatmap_threshold`` x its maximum with them."""
        import numpy as np

        from dissectkit.labelling.grounding import PointingGame, grid_union

        present = [c for c in classes if masks and c in masks and np.asarray(masks[c]).any()]
        if not present:
            return {"pointing": None, "iou": None}
        H, W = np.asarray(masks[present[0]]).shape  # type: ignore[index]
        gh, gw = grid.grid(H, W)
        L = grid_union(masks, present, (H, W), (gh, gw))  # type: ignore[arg-type]
        up = upsample(heat[None], (gh, gw))[0].cpu().numpy()
        peak = float(up.max())
        region = up >= self.params.heatmap_threshold * peak if peak > 0 else np.zeros_like(L)
        union = np.count_nonzero(region | L)
        game = PointingGame((gh, gw), tuple(heat.shape[-2:]), self.params.pointing_tolerance)
        hit = bool(game.near(L)[game.place(int(up.argmax()))])
        return {"pointing": hit, "iou": float(np.count_nonzero(region & L) / union) if union else 0.0}
