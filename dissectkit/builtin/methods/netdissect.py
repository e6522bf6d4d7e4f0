"""Network Dissection: IoU of each neuron's thresholded, upsampled activation maps with concept masks,
on a bounded comparison grid, streamed (docs/methods.md, "Network Dissection")."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dissectkit.base.contract import Method
from dissectkit.base.errors import EvidenceError
from dissectkit.base.params import Params
from dissectkit.builtin.methods._common import blank_dead, device_of
from dissectkit.host.manager import get_host
from dissectkit.labelling.evidence import Evidence, LayerLabels
from dissectkit.labelling.spatial_grid import QuantileGrid


class NetDissectParams(Params):
    quantile: float = Field(0.005, gt=0, lt=1, description="fraction of pixels above each neuron's threshold")
    min_iou: float = Field(0.04, ge=0, le=1)
    top_m: int = Field(5, ge=1, description="concepts kept per neuron (those with IoU >= min_iou)")
    resolution: int | None = Field(
        112, ge=1, description="longer side of the comparison grid (masks reduced to it); null: the masks' own size"
    )
    max_memory_mb: float = Field(512.0, gt=0)


class NetDissect(Method, QuantileGrid):
    """The grid, the thresholds and the streams of annotated maps come from :class:`QuantileGrid`."""

    name = "netdissect"
    needs_masks = True
    uses_dissector = False  # reads only the spatial maps and the probe's masks

    def __init__(self, params: NetDissectParams, ctx: Any) -> None:
        self.params = params
        self.device = getattr(ctx, "device", "cpu")

    def iou(self, evidence: Evidence, k0: int, k1: int, T, names: list[str], device: str):
        """The ``[kc, C]`` IoU of neurons k0..k1 thresholded at ``T`` with each concept's masks."""
        import torch

        col = {c: j for j, c in enumerate(names)}
        kc = k1 - k0
        inter = torch.zeros((kc, len(names)), dtype=torch.float64, device=device)
        act = torch.zeros(kc, dtype=torch.float64, device=device)
        lab = torch.zeros(len(names), dtype=torch.float64, device=device)
        for Fk, L, idx in self._pieces(evidence, k0, k1, device, col, 12):
            M = (Fk > T.unsqueeze(1)).float()
            act += M.sum(1).double()
            if idx:
                j = torch.tensor(idx, device=device)
                inter[:, j] += (M @ L.T).double()
                lab[j] += L.sum(1).double()
        union = act.unsqueeze(1) + lab.unsqueeze(0) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))

    def _iou_of_pixels(self, evidence: Evidence, keep, where, names: list[str], device: str):
        """The IoU from each neuron's pixels above its threshold (``where[keep]``, global grid pixel
        indices): one stream of the masks only, gathering each concept's mask at those pixels."""
        import torch

        col = {c: j for j, c in enumerate(names)}
        kc = keep.shape[0]
        act = keep.sum(1).double()
        neuron = torch.arange(kc, device=device).unsqueeze(1).expand_as(keep)[keep]
        pix, order = where[keep].sort()
        neuron = neuron[order]
        inter = torch.zeros((kc, len(names)), dtype=torch.float64, device=device)
        lab = torch.zeros(len(names), dtype=torch.float64, device=device)
        offset = 0
        for L, idx, n in self._mask_pieces(evidence, col, device):
            if idx:
                lo, hi = torch.searchsorted(pix, torch.tensor([offset, offset + n], device=device)).tolist()
                j = torch.tensor(idx, device=device)
                part = torch.zeros((kc, len(idx)), dtype=torch.float64, device=device)
                part.index_add_(0, neuron[lo:hi], L[:, pix[lo:hi] - offset].T.double())
                inter[:, j] += part
                lab[j] += L.sum(1).double()
            offset += n
        union = act.unsqueeze(1) + lab.unsqueeze(0) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))

    def _mask_pieces(self, evidence: Evidence, col: dict[str, int], device: str):
        """Yield ``(L [c, n], idx, n)``: the grid masks of the annotated images, in the order and
        pixel layout of :meth:`_pieces`, a batch at a time."""
        for _, masks, (H, W) in self._annotated(evidence):
            gh, gw = self.grid(H, W)
            L, idx = self._grid_masks(masks, col, (H, W), (gh, gw), device)
            yield L, idx, len(masks) * gh * gw

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
                f"{', '.join(get_host().registry.masked_probes()) or '(none installed)'}, or choose the "
                "'clip-dissect' or 'mammi' method."
            )
        device = device_of(self, evidence)
        names = evidence.concept_texts
        K, total, dead = self._survey(evidence)
        merge, group = self._plan(K, total)
        out = []
        for k0 in range(0, K, group):
            k1 = min(K, k0 + group)
            T, above = self._thresholds(evidence, k0, k1, device, total, merge)
            if above is None:
                out.append(self.iou(evidence, k0, k1, T, names, device).cpu())
            else:
                out.append(self._iou_of_pixels(evidence, *above, names, device).cpu())
        return torch.cat(out, 0), dead.cpu()

    def label_resampled(self, evidence: Evidence, labels: LayerLabels, resamples: Any) -> Any:
        """Labels under bootstrap resamples of the probe, for label stability (``dissectkit.builtin.methods._resampled``)."""
        from dissectkit.builtin.methods._resampled import netdissect_resampled

        return netdissect_resampled(self, evidence, labels, resamples)

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
