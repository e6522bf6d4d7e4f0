"""Network Dissection: IoU of each neuron's thresholded, upsampled activation maps with concept masks.

Two streams over ``evidence.spatial_maps()`` (three when a threshold needs refining): per-neuron
thresholds from a histogram of order-preserving float keys (exact after refinement, otherwise
within 5e-4 in quantile), then intersection / union counts per neuron and concept.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dissectkit.builtin.methods._common import blank_dead, device_of
from dissectkit.errors import DataError, EvidenceError
from dissectkit.methods import Evidence, LayerLabels, MethodBase
from dissectkit.registry import Params
from dissectkit.streaming import key_value, order_key

_BINS = 1 << 16
_TOL = 5e-4  # refine a threshold whose histogram bin holds more than this fraction of the pixels
_MASK_PROBES = ("synth-mammo", "cbis-ddsm", "nih-cxr14", "csv (with a mask column)")


class NetDissectParams(Params):
    quantile: float = Field(0.005, gt=0, lt=1, description="fraction of pixels above each neuron's threshold")
    min_iou: float = Field(0.04, ge=0, le=1)
    top_m: int = Field(5, ge=1, description="concepts kept per neuron (those with IoU >= min_iou)")
    max_memory_mb: float = Field(512.0, gt=0)


def _mask_probe_hint() -> str:
    try:
        from dissectkit.plugins import get_host

        names = [s.name for s in get_host().registry.list("probe") if s.metadata.get("has_masks")]
    except Exception:  # noqa: BLE001 - only a hint
        names = []
    return ", ".join(dict.fromkeys([*names, *_MASK_PROBES]))


class NetDissect(MethodBase):
    name = "netdissect"
    needs_masks = True
    uses_dissector = False  # reads only the spatial maps and the probe's masks

    def __init__(self, params: NetDissectParams, ctx: Any) -> None:
        self.params = params
        self.device = getattr(ctx, "device", "cpu")

    # -- streaming helpers ---------------------------------------------------------------------
    def _images(self, evidence: Evidence, k0: int, k1: int, device: str):
        """Yield ``(F[kc, H*W], masks)`` per annotated image: maps of neurons k0..k1 upsampled to the
        mask size (bilinear), in pieces of neurons that fit the memory bound."""
        import torch
        import torch.nn.functional as F

        budget = max(1, int(self.params.max_memory_mb * 2**20 / 2 / 32))  # ~32 bytes of temporaries per value
        for batch in evidence.spatial_maps():
            maps = torch.as_tensor(batch.maps)
            if maps.ndim != 4:
                raise EvidenceError(
                    f"Layer {evidence.layer!r}: spatial maps must be [B, K, h, w], got {tuple(maps.shape)}."
                )
            if len(batch.masks) != maps.shape[0]:
                raise EvidenceError(
                    f"Layer {evidence.layer!r}: {maps.shape[0]} maps but {len(batch.masks)} mask entries."
                )
            for b, masks in enumerate(batch.masks):
                if not masks:
                    continue
                shapes = {tuple(getattr(m, "shape", ())) for m in masks.values()}
                if len(shapes) != 1 or len(next(iter(shapes))) != 2:
                    raise DataError(
                        f"Masks of one probe image must all be H x W of one size; got shapes {sorted(shapes)}."
                    )
                H, W = next(iter(shapes))
                m = maps[b : b + 1, k0:k1].to(device=device, dtype=torch.float32)
                if not bool(torch.isfinite(m).all()):
                    bad = (~torch.isfinite(m[0])).flatten(1).any(1).nonzero().flatten().tolist()
                    raise EvidenceError(
                        f"Spatial maps of layer {evidence.layer!r} contain NaN or inf for neuron {k0 + bad[0]}."
                    )
                step = max(1, budget // (H * W))
                for s in range(0, m.shape[1], step):
                    up = F.interpolate(m[:, s : s + step], size=(H, W), mode="bilinear", align_corners=False)
                    yield s, up[0].reshape(up.shape[1], H * W), masks

    def thresholds(self, evidence: Evidence, k0: int, k1: int, device: str):
        """Per-neuron level ``T_k`` exceeded by a fraction ``quantile`` of all annotated pixels."""
        return self._thresholds(evidence, k0, k1, device)[0]

    def _thresholds(self, evidence: Evidence, k0: int, k1: int, device: str):
        """``(T [kc], dead [kc])``: the thresholds and the neurons whose upsampled maps are constant
        over every annotated pixel (dead: nothing to threshold)."""
        import torch

        kc = k1 - k0
        hist = torch.zeros((kc, _BINS), dtype=torch.int64, device=device)
        vmin = torch.full((kc,), float("inf"), device=device)
        vmax = torch.full((kc,), float("-inf"), device=device)
        total = 0
        for s, Fk, _ in self._images(evidence, k0, k1, device):
            e = s + Fk.shape[0]
            torch.minimum(vmin[s:e], Fk.amin(1), out=vmin[s:e])
            torch.maximum(vmax[s:e], Fk.amax(1), out=vmax[s:e])
            hi = (order_key(Fk) >> 16).long() + (_BINS // 2)
            rows = torch.arange(s, e, device=device).unsqueeze(1) * _BINS
            hist.view(-1).index_add_(0, (rows + hi).flatten(), _ones(hi.numel(), device))
            if s == 0:
                total += Fk.shape[1]
        if total == 0:
            raise EvidenceError(
                f"Layer {evidence.layer!r}: no probe image carries masks, so netdissect has nothing to compare with."
            )
        m = max(1, round(self.params.quantile * total))
        rank = min(m + 1, total)  # T is the rank-th largest value: about m pixels lie above it
        from_top = hist.flip(1).cumsum(1)
        pos = (from_top < rank).sum(1)  # index (from the top) of the bin holding the rank-th value
        b = (_BINS - 1) - pos
        above = torch.where(pos > 0, from_top.gather(1, (pos - 1).clamp_min(0).unsqueeze(1)).squeeze(1), 0)
        cnt = hist.gather(1, b.unsqueeze(1)).squeeze(1)
        lo_key = ((b - _BINS // 2) << 16).to(torch.int32)
        lo = key_value(lo_key).double()
        hi = key_value(lo_key | 0xFFFF).double()
        r = (rank - above).double()
        T = hi - (r - 0.5) / cnt.double() * (hi - lo)
        refine = (cnt.double() / total > _TOL).nonzero().flatten()
        if refine.numel():
            T[refine] = self._refine(evidence, k0, k1, device, refine, b[refine], rank - above[refine])
        return T.float(), vmin == vmax

    def _refine(self, evidence, k0, k1, device, which, bins, ranks):
        """Exact values: a histogram of the low 16 key bits of the pixels in each chosen bin."""
        import torch

        n = which.numel()
        hist = torch.zeros((n, _BINS), dtype=torch.int64, device=device)
        local = torch.full((k1 - k0,), -1, dtype=torch.long, device=device)
        local[which] = torch.arange(n, device=device)
        for s, Fk, _ in self._images(evidence, k0, k1, device):
            sel = local[s : s + Fk.shape[0]]
            keep = (sel >= 0).nonzero().flatten()
            if not keep.numel():
                continue
            key = order_key(Fk[keep])
            hi = (key >> 16).long() + (_BINS // 2)
            inside = hi == bins[sel[keep]].unsqueeze(1)
            low = (key & 0xFFFF).long()
            rows = sel[keep].unsqueeze(1).expand_as(low)
            flat = (rows * _BINS + low)[inside]
            hist.view(-1).index_add_(0, flat, _ones(flat.numel(), device))
        from_top = hist.flip(1).cumsum(1)
        pos = (from_top < ranks.unsqueeze(1)).sum(1)
        low = (_BINS - 1) - pos
        key = (((bins - _BINS // 2) << 16) | low).to(torch.int32)
        return key_value(key).double()

    # -- the method -----------------------------------------------------------------------------
    def iou(self, evidence: Evidence, k0: int, k1: int, T, names: list[str], device: str):
        import torch

        col = {c: j for j, c in enumerate(names)}
        kc = k1 - k0
        inter = torch.zeros((kc, len(names)), dtype=torch.float64, device=device)
        act = torch.zeros(kc, dtype=torch.float64, device=device)
        lab = torch.zeros(len(names), dtype=torch.float64, device=device)
        for s, Fk, masks in self._images(evidence, k0, k1, device):
            M = (Fk > T[s : s + Fk.shape[0]].unsqueeze(1)).float()
            act[s : s + Fk.shape[0]] += M.sum(1).double()
            present = [(col[c], m) for c, m in masks.items() if c in col]
            if not present:
                continue
            idx = torch.tensor([j for j, _ in present], device=device)
            L = torch.stack(
                [torch.as_tensor(m, device=device).reshape(-1).bool() for _, m in present]
            ).float()
            inter[s : s + Fk.shape[0], idx] += (M @ L.T).double()
            if s == 0:
                lab[idx] += L.sum(1).double()
        union = act.unsqueeze(1) + lab.unsqueeze(0) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))

    def scores(self, evidence: Evidence):
        """The ``[K, C]`` IoU matrix of the layer (the labels are read from it)."""
        return self._scores(evidence)[0]

    def _scores(self, evidence: Evidence):
        """``(IoU [K, C], dead [K])``."""
        import torch

        if evidence.spatial_maps is None:
            raise EvidenceError(
                f"netdissect cannot label layer {evidence.layer!r}: the probe has no masks. Network "
                f"Dissection needs per-pixel concept masks; use a mask-capable probe such as "
                f"{_mask_probe_hint()}, or choose the 'clip-dissect' or 'mammi' method."
            )
        device = device_of(self, evidence)
        names = evidence.concept_texts
        K = None
        for batch in evidence.spatial_maps():
            K = int(torch.as_tensor(batch.maps).shape[1])
            break
        if K is None:
            raise EvidenceError(f"Layer {evidence.layer!r}: the probe yielded no spatial maps.")
        group = max(1, int(self.params.max_memory_mb * 2**20 / 2 / (_BINS * 8)))
        out, dead = [], []
        for k0 in range(0, K, group):
            k1 = min(K, k0 + group)
            T, d = self._thresholds(evidence, k0, k1, device)
            out.append(self.iou(evidence, k0, k1, T, names, device).cpu())
            dead.append(d.cpu())
        return torch.cat(out, 0), torch.cat(dead, 0)

    def label(self, evidence: Evidence) -> LayerLabels:
        import torch

        S, dead = self._scores(evidence)
        names = evidence.concept_texts
        neurons = []
        reasons: dict[int, str] = {}
        order = torch.sort(S, dim=1, descending=True, stable=True).indices[:, : self.params.top_m]
        for k, (row, idx) in enumerate(zip(S.tolist(), order.tolist(), strict=True)):
            neurons.append([(names[j], row[j]) for j in idx if row[j] >= self.params.min_iou and row[j] > 0])
            if not neurons[-1]:
                reasons[k] = "no_match"
        reasons.update(blank_dead(neurons, dead))
        return LayerLabels(
            layer=evidence.layer, method=self.name, params=self.params.model_dump(), neurons=neurons, reasons=reasons
        )


def make_netdissect(params: NetDissectParams, ctx: Any) -> NetDissect:
    return NetDissect(params, ctx)


def _ones(n: int, device: str):
    """``n`` int64 ones without allocating them (a stride-0 view)."""
    import torch

    return torch.ones(1, dtype=torch.int64, device=device).expand(n)
