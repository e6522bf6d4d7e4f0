"""Network Dissection's per-neuron quantile threshold on a bounded comparison grid, shared by the
``netdissect`` method and the ``grounding`` columns (docs/methods.md, "Network Dissection").

:class:`QuantileGrid` streams ``Evidence.spatial_maps`` (the annotated images only), upsamples each
map bilinearly to the comparison grid of its image's masks and finds, per neuron, the level ``T_k``
exceeded by a fraction ``quantile`` of all grid pixels (exact by a running merge, or by histograms of
order-preserving keys when the merge does not fit ``max_memory_mb``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dissectkit.base.errors import DataError, EvidenceError
from dissectkit.labelling.evidence import Evidence
from dissectkit.labelling.streaming import Moments, key_value, order_key

__all__ = ["QuantileGrid", "TopPixels", "bounded_size", "derived", "upsample"]

_BINS = 1 << 16
_TOL = 5e-4  # refine a threshold whose histogram bin holds more than this fraction of the pixels
_TOP_BYTES = 64  # per kept value of the running top-(m+1) merge: values, pixels, candidates, merge copies


def bounded_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """``(h, w)`` scaled so that its longer side is at most ``max_side`` (never enlarged)."""
    if max(h, w) <= max_side:
        return h, w
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def derived(spatial: Any, name: str, parts: Any, compute: Any) -> dict[str, Any]:
    """``compute()`` (a dict of tensors computed from the spatial stream ``spatial``) read from where
    the stream keeps what is derived from it when it offers that (the engine's ``SpatialSource``:
    ``load_derived`` / ``save_derived``, in the cache next to the maps), else computed and saved there.
    A stream without that store (e.g. hand-made evidence) computes every time."""
    load = getattr(spatial, "load_derived", None)
    if callable(load):
        got = load(name, parts)
        if got is not None:
            return dict(got)
    value = dict(compute())
    save = getattr(spatial, "save_derived", None)
    if callable(save):
        save(name, parts, value)
    return value


class QuantileGrid:
    """Network Dissection's comparison grid and per-neuron thresholds over ``Evidence.spatial_maps``.

    ``params`` has ``quantile``, ``resolution`` (longer side of the grid; ``None``: the masks' own
    size) and ``max_memory_mb``; ``who`` names the user in error messages."""

    who = "netdissect"

    def __init__(self, params: Any, who: str | None = None) -> None:
        self.params = params
        if who:
            self.who = who

    @property
    def _budget(self) -> int:
        return int(self.params.max_memory_mb * 2**20)

    def grid(self, H: int, W: int) -> tuple[int, int]:
        """The comparison grid of an image whose masks are ``H x W``."""
        return bounded_size(H, W, self.params.resolution) if self.params.resolution else (H, W)

    def _annotated(self, evidence: Evidence) -> Iterator[tuple[Any, list[dict[str, Any]], tuple[int, int]]]:
        """Yield ``(maps [b, K, h, w], masks, (H, W))`` for the annotated images of each streamed
        batch, grouped by mask size (validated)."""
        import torch

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
            groups: dict[tuple[int, int], list[int]] = {}
            for b, masks in enumerate(batch.masks):
                if not masks:
                    continue
                shapes = {tuple(getattr(m, "shape", ())) for m in masks.values()}
                if len(shapes) != 1 or len(next(iter(shapes))) != 2:
                    raise DataError(
                        f"Masks of one probe image must all be H x W of one size; got shapes {sorted(shapes)}."
                    )
                groups.setdefault(next(iter(shapes)), []).append(b)
            for size, rows in groups.items():
                yield maps[rows], [batch.masks[b] for b in rows], size

    def _pieces(self, evidence: Evidence, k0: int, k1: int, device: str, col: dict[str, int] | None, per_value: int):
        """Yield ``(F [kc, n], L [c, n] | None, idx)``: neurons k0..k1's maps upsampled to the grid of a
        few annotated images, with ``col`` also their grid masks of the concepts present (columns ``idx``)."""
        import torch

        kc = k1 - k0
        for maps, masks, (H, W) in self._annotated(evidence):
            gh, gw = self.grid(H, W)
            nc = max(len(m) for m in masks) if col is not None else 0
            per_image = (kc * per_value + nc * 4) * gh * gw
            step = max(1, min(self._budget // per_image, (1 << 24) // (gh * gw)))
            for s in range(0, maps.shape[0], step):
                m = maps[s : s + step, k0:k1].to(device=device, dtype=torch.float32).transpose(0, 1)
                Fk = upsample(m, (gh, gw)).reshape(kc, -1)  # [kc, b, gh, gw]: the pixels image by image
                if col is None:
                    yield Fk, None, []
                    continue
                L, idx = self._grid_masks(masks[s : s + step], col, (H, W), (gh, gw), device)
                yield Fk, L, idx

    def _grid_masks(self, masks: list[dict[str, Any]], col: dict[str, int], size, grid, device: str):
        """``(L [c, n], idx)``: the images' grid masks of the concepts in ``col`` present among them."""
        import numpy as np
        import torch

        from dissectkit.imaging.raw import centre_indices

        names = sorted({c for m in masks for c in m if c in col}, key=col.__getitem__)
        if not names:
            return None, []
        iy, ix = (centre_indices(n, g) for g, n in zip(grid, size, strict=True))
        L = np.zeros((len(names), len(masks), *grid), dtype=np.float32)
        for b, m in enumerate(masks):
            for j, c in enumerate(names):
                if c in m:
                    L[j, b] = np.asarray(m[c], dtype=bool)[np.ix_(iy, ix)]
        return torch.from_numpy(L.reshape(len(names), -1)).to(device), [col[c] for c in names]

    def _survey(self, evidence: Evidence):
        """``(K, pixels, dead [K])`` over the annotated images, checking that the maps are finite."""
        import torch

        total, moments = 0, None
        for maps, _, (H, W) in self._annotated(evidence):
            m = maps.to(dtype=torch.float32).transpose(0, 1).flatten(1).T  # [b*h*w, K]
            if not bool(torch.isfinite(m).all()):
                bad = (~torch.isfinite(m)).any(0).nonzero().flatten().tolist()
                raise EvidenceError(f"Spatial maps of layer {evidence.layer!r} contain NaN or inf for neuron {bad[0]}.")
            moments = Moments.of(m) if moments is None else moments.add(m)
            gh, gw = self.grid(H, W)
            total += maps.shape[0] * gh * gw
        if moments is None:
            raise EvidenceError(
                f"Layer {evidence.layer!r}: no probe image carries masks, so {self.who} has nothing to compare with."
            )
        return moments.min.shape[0], total, moments.constant

    def _rank(self, total: int) -> int:
        """``T_k`` is the rank-th largest grid value: about ``m = round(q * pixels)`` lie above it."""
        return min(max(1, round(self.params.quantile * total)) + 1, total)

    def _plan(self, K: int, total: int) -> tuple[bool, int]:
        """``(exact merge?, neurons per group)``: the merge unless the histogram needs 4x fewer groups."""
        fit_top = self._budget // (self._rank(total) * _TOP_BYTES)
        fit_hist = max(1, self._budget // 2 // (_BINS * 8))
        if fit_top >= 1 and -(-K // fit_top) <= 4 * -(-K // fit_hist):
            return True, min(K, fit_top)
        return False, min(K, fit_hist)

    def thresholds(self, evidence: Evidence, k0: int, k1: int, device: str):
        """Per-neuron level ``T_k`` exceeded by a fraction ``quantile`` of all annotated grid pixels."""
        K, total, _ = self._survey(evidence)
        return self._thresholds(evidence, k0, k1, device, total, self._plan(K, total)[0])[0]

    def layer_thresholds(self, evidence: Evidence, device: str = "cpu"):
        """``(T [K], dead [K])``: every neuron's threshold (on the CPU) and the neurons whose maps are
        constant over the annotated images, in the groups of neurons ``max_memory_mb`` allows."""
        import torch

        K, total, dead = self._survey(evidence)
        merge, group = self._plan(K, total)
        parts = [self._thresholds(evidence, k0, min(K, k0 + group), device, total, merge)[0].cpu()
                 for k0 in range(0, K, group)]
        return torch.cat(parts), dead.cpu()

    def _thresholds(self, evidence: Evidence, k0: int, k1: int, device: str, total: int, merge: bool):
        """``(T [kc], above)``: the thresholds; with the merge also ``(keep, where)``, the pixels
        above them (else None)."""
        import torch

        kc, rank = k1 - k0, self._rank(total)
        if merge:  # exact: each neuron's rank largest values and their pixels, by a running merge
            top = TopPixels(kc, rank, device, self._budget // 16)
            offset = 0
            for maps, _, (H, W) in self._annotated(evidence):
                m = maps[:, k0:k1].to(device=device, dtype=torch.float32).transpose(0, 1)
                gh, gw = self.grid(H, W)
                top.add_maps(m, (gh, gw), offset)
                offset += m.shape[1] * gh * gw
            T, keep, where = top.result()
            return T, (keep, where)
        hist = torch.zeros((kc, _BINS), dtype=torch.int64, device=device)
        rows = torch.arange(kc, device=device).unsqueeze(1) * _BINS
        for Fk, _, _ in self._pieces(evidence, k0, k1, device, None, 64):
            hi = (order_key(Fk) >> 16).long() + (_BINS // 2)
            hist.view(-1).index_add_(0, (rows + hi).flatten(), _ones(hi.numel(), device))
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
        return T.float(), None

    def _refine(self, evidence, k0, k1, device, which, bins, ranks):
        """Exact values: a histogram of the low 16 key bits of the pixels in each chosen bin."""
        import torch

        n = which.numel()
        hist = torch.zeros((n, _BINS), dtype=torch.int64, device=device)
        rows = torch.arange(n, device=device).unsqueeze(1)
        for Fk, _, _ in self._pieces(evidence, k0, k1, device, None, 64):
            key = order_key(Fk[which])
            inside = ((key >> 16).long() + (_BINS // 2)) == bins.unsqueeze(1)
            flat = (rows * _BINS + (key & 0xFFFF).long())[inside]
            hist.view(-1).index_add_(0, flat, _ones(flat.numel(), device))
        from_top = hist.flip(1).cumsum(1)
        pos = (from_top < ranks.unsqueeze(1)).sum(1)
        low = (_BINS - 1) - pos
        key = (((bins - _BINS // 2) << 16) | low).to(torch.int32)
        return key_value(key).double()



class TopPixels:
    """Each of ``kc`` neurons' ``rank`` largest values and their pixel indices, by a running merge."""

    def __init__(self, kc: int, rank: int, device: str, piece: int = 1 << 22) -> None:
        import torch

        self.kc, self.rank, self.device, self.piece = kc, rank, device, piece
        self.top = torch.empty((kc, 0), device=device)
        self.where = torch.empty((kc, 0), dtype=torch.int64, device=device)
        self.least = None  # [kc] once every neuron holds rank values
        self.buf: list[tuple] = []
        self.count = torch.zeros(kc, dtype=torch.int64, device=device)

    def add(self, Fk, offset: int) -> None:
        """Offer the values ``Fk [kc, n]`` of pixels ``offset .. offset + n``."""
        import torch

        if self.least is None:
            pix = torch.arange(offset, offset + Fk.shape[1], device=self.device).expand(self.kc, -1)
            self.top, self.where = torch.cat([self.top, Fk], 1), torch.cat([self.where, pix], 1)
            if self.top.shape[1] >= self.rank:
                self._select()
            return
        rows, cols = (Fk > self.least.unsqueeze(1)).nonzero(as_tuple=True)
        self._offer(rows, Fk[rows, cols], cols + offset)

    def add_maps(self, m, grid: tuple[int, int], offset: int) -> None:
        """Offer the maps ``m [kc, b, h, w]`` upsampled to ``grid`` (pixels from ``offset``); an image whose
        map peaks at or below a neuron's least kept value is not upsampled for it."""
        kc, b = m.shape[:2]
        P = grid[0] * grid[1]
        if self.least is None:  # filling: every value enters
            step = max(1, self.piece // (kc * P))
            for s in range(0, b, step):
                self.add(upsample(m[:, s : s + step], grid).reshape(kc, -1), offset + s * P)
                if self.least is not None:
                    self.add_maps(m[:, s + step :], grid, offset + (s + step) * P)
                    return
            return
        k, i = (m.flatten(2).amax(2) > self.least.unsqueeze(1)).nonzero(as_tuple=True)
        step = max(1, self.piece // P)
        for s in range(0, k.numel(), step):
            kk, ii = k[s : s + step], i[s : s + step]
            up = upsample(m[kk, ii].unsqueeze(1), grid).reshape(kk.numel(), P)
            r, p = (up > self.least[kk].unsqueeze(1)).nonzero(as_tuple=True)
            self._offer(kk[r], up[r, p], offset + ii[r] * P + p)

    def _offer(self, rows, vals, pix) -> None:
        """Buffer candidate values of neurons ``rows`` at pixels ``pix``; merge when one has ``rank``."""
        import torch

        if not rows.numel():
            return
        self.buf.append((rows, vals, pix))
        self.count += torch.bincount(rows, minlength=self.kc)
        if int(self.count.max()) >= self.rank:
            self._flush()

    def _flush(self) -> None:
        import torch

        if not self.buf:
            return
        rows, vals, pix = (torch.cat(x) for x in zip(*self.buf, strict=True))
        self.buf, width = [], int(self.count.max())
        rows, order = rows.sort(stable=True)
        start = self.count.cumsum(0) - self.count
        pos = torch.arange(rows.numel(), device=self.device) - start[rows]
        V = torch.full((self.kc, width), float("-inf"), device=self.device)
        P = torch.zeros((self.kc, width), dtype=torch.int64, device=self.device)
        V[rows, pos], P[rows, pos] = vals[order], pix[order]
        self.top, self.where = torch.cat([self.top, V], 1), torch.cat([self.where, P], 1)
        self.count.zero_()
        self._select()

    def _select(self) -> None:
        if self.top.shape[1] > self.rank:
            self.top, i = self.top.topk(self.rank, dim=1, sorted=False)
            self.where = self.where.gather(1, i)
        self.least = self.top.amin(1)

    def result(self):
        """``(T [kc], above [kc, rank], where [kc, rank])``: the rank-th largest value of each
        neuron, which kept values lie above it and their pixels (every pixel above ``T`` is kept)."""
        self._flush()
        if self.least is None:  # fewer than rank pixels offered: cannot happen when rank <= pixels
            self._select()
        T = self.least
        return T, self.top > T.unsqueeze(1), self.where


def upsample(m, grid: tuple[int, int]):
    """Maps ``[..., h, w]`` resized bilinearly to ``grid``, each plane on its own (batching-independent)."""
    import torch.nn.functional as F

    if tuple(m.shape[-2:]) == tuple(grid):
        return m
    up = F.interpolate(m.reshape(-1, 1, *m.shape[-2:]), size=tuple(grid), mode="bilinear", align_corners=False)
    return up.reshape(*m.shape[:-2], *grid)


def _ones(n: int, device: str):
    """``n`` int64 ones without allocating them (a stride-0 view)."""
    import torch

    return torch.ones(1, dtype=torch.int64, device=device).expand(n)
