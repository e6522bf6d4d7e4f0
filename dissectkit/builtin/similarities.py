"""CLIP-Dissect's similarity functions: ``cos``, ``cos3``, ``wpmi``, ``soft_wpmi``, ``rank_reorder``;
``(P[N, C], A) -> Tensor[K, C]``, ``P`` dense or a :class:`LazyP`, ``A`` read in streamed passes.
Formulas and defaults: ``docs/methods.md``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from dissectkit.base.contract import Similarity
from dissectkit.base.errors import EvidenceError
from dissectkit.base.params import Params, probe_bound
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register
from dissectkit.labelling.streaming import ActivationStream, check_finite, of_layer, stream_top, top_indices

if TYPE_CHECKING:
    import torch

__all__ = ["LazyP", "top_indices", "check_finite", "SIMILARITIES", "score_tolerance", "has_precision"]


Precision = Literal["default", "published"]
UNIT_ROUNDOFF = 2.0**-24  # float32's unit roundoff u: a rounded value is within u (relative) of the exact one
TOLERANCE_FACTOR = 4.0  # the score tolerances below are this many u times the scale of the rounded quantities


class _Budget(Params):
    max_memory_mb: float = Field(512.0, gt=0, description="bound on the temporaries held at once")
    chunk_size: int | None = Field(None, ge=1, description="neurons per chunk (None: automatic)")
    precision: Precision = Field(
        "default", description="default: dissectkit's streamed arithmetic; published: the published code's "
        "float32 arithmetic in its operation order (docs/methods.md, 'precision: published')")


class CosParams(_Budget):
    """``cos``: cosine of activation and similarity columns over the probe images."""


class Cos3Params(_Budget):
    """``cos3``: cosine of the centred, cubed columns (CLIP-Dissect's ``cos_similarity_cubed``)."""


class WpmiParams(_Budget):
    top_k: Annotated[int, probe_bound("count")] = Field(28, ge=1)
    a: float = 2.0
    lam: float = 0.6
    eps: float = Field(1e-7, ge=0)


class SoftWpmiParams(_Budget):
    top_k: Annotated[int, probe_bound("count")] = Field(100, ge=1)
    a: float = 10.0
    lam: float = 1.0
    eps: float = Field(1e-7, ge=0)
    p_start: float = Field(0.998, ge=0, le=1)
    p_end: float = Field(0.97, ge=0, le=1)


class RankReorderParams(_Budget):
    p: float = Field(3.0, gt=0)
    top_fraction: Annotated[float, probe_bound("fraction")] = Field(0.05, gt=0, le=1)
    scale_p: float = 0.5
    n_permutations: int = Field(5, ge=1)
    seed: int = 0


_ROWS = 1 << 14  # image rows per block for the statistics of a lazy P


class LazyP:
    """``P = I @ T.T`` never held whole: rows are formed on demand (``I[N, D]``, ``T[C, D]``)."""

    def __init__(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> None:
        if image_embeddings.ndim != 2 or text_embeddings.ndim != 2:
            raise EvidenceError("LazyP needs 2-D image [N, D] and text [C, D] embeddings.")
        if image_embeddings.shape[1] != text_embeddings.shape[1]:
            raise EvidenceError(
                f"Image embeddings have size {image_embeddings.shape[1]} but text embeddings "
                f"{text_embeddings.shape[1]}: they must come from the same dissector."
            )
        self.I = image_embeddings
        self.T = text_embeddings

    @property
    def shape(self) -> tuple[int, int]:
        return (self.I.shape[0], self.T.shape[0])

    def to(self, device: Any) -> LazyP:
        return LazyP(self.I.to(device=device, dtype=_f32()), self.T.to(device=device, dtype=_f32()))

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.I.index_select(0, idx) @ self.T.T

    def block(self, start: int, stop: int) -> torch.Tensor:
        return self.I[start:stop] @ self.T.T

    def col_mean(self) -> torch.Tensor:
        import torch

        total = torch.zeros(self.I.shape[1], dtype=torch.float64, device=self.I.device)
        for s in range(0, self.I.shape[0], _ROWS):  # row blocks: no float64 copy of I
            total += self.I[s : s + _ROWS].double().sum(0)
        return (total / max(self.I.shape[0], 1) @ self.T.double().T).float()

    def col_norm(self) -> torch.Tensor:
        import torch

        D = self.I.shape[1]
        gram = torch.zeros((D, D), dtype=torch.float64, device=self.I.device)
        for s in range(0, self.I.shape[0], _ROWS):
            b = self.I[s : s + _ROWS].double()
            gram.addmm_(b.T, b)
        T = self.T.double()
        return ((T @ gram) * T).sum(1).clamp_min(0).sqrt().float()

    def left_matmul(self, M: torch.Tensor) -> torch.Tensor:
        """``M.T @ P`` for ``M[N, K]`` without forming ``P``."""
        return (M.T @ self.I) @ self.T.T

    def left_part(self, M: torch.Tensor, start: int) -> torch.Tensor:
        """One row block's share of ``M.T @ P`` in factored form (``M_b.T @ I_b``, ``[K, D]``)."""
        return M.T @ self.I[start : start + M.shape[0]]

    def left_finish(self, acc: torch.Tensor) -> torch.Tensor:
        """``M.T @ P`` from the summed :meth:`left_part` shares."""
        return acc @ self.T.T

    def check_finite(self, layer: str | None = None) -> None:
        import torch

        for s in range(0, self.I.shape[0], _ROWS):  # row blocks: no [N, D] temporary
            part = self.I[s : s + _ROWS]
            if not bool(torch.isfinite(part).all()):
                bad = (s + (~torch.isfinite(part)).any(1).nonzero().flatten()).tolist()
                raise EvidenceError(f"Image embeddings{of_layer(layer)} contain NaN or inf (images {bad[:5]}).")
        if not bool(torch.isfinite(self.T).all()):
            bad = (~torch.isfinite(self.T)).any(1).nonzero().flatten().tolist()
            raise EvidenceError(f"Text embeddings{of_layer(layer)} contain NaN or inf (concepts {bad[:5]}).")


class _DenseP:
    """A materialised ``P[N, C]`` behind the same interface as :class:`LazyP`."""

    def __init__(self, P: torch.Tensor) -> None:
        if P.ndim != 2:
            raise EvidenceError(f"P must be a 2-D [images, concepts] tensor, got shape {tuple(P.shape)}.")
        self.P = P

    @property
    def shape(self) -> tuple[int, int]:
        return (self.P.shape[0], self.P.shape[1])

    def to(self, device: Any) -> _DenseP:
        return _DenseP(self.P.to(device=device, dtype=_f32()))

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.P.index_select(0, idx)

    def block(self, start: int, stop: int) -> torch.Tensor:
        return self.P[start:stop]

    def col_mean(self) -> torch.Tensor:
        return self.P.mean(0)

    def col_norm(self) -> torch.Tensor:
        return self.P.norm(dim=0)

    def left_part(self, M: torch.Tensor, start: int) -> torch.Tensor:
        return M.T @ self.P[start : start + M.shape[0]]

    def left_finish(self, acc: torch.Tensor) -> torch.Tensor:
        return acc

    def check_finite(self, layer: str | None = None) -> None:
        import torch

        if not bool(torch.isfinite(self.P).all()):
            bad = (~torch.isfinite(self.P)).any(1).nonzero().flatten().tolist()
            raise EvidenceError(f"Similarity matrix P{of_layer(layer)} contains NaN or inf (images {bad[:5]}).")


def _f32():
    import torch

    return torch.float32


class _Similarity(Similarity):
    name = "similarity"

    def __init__(self, params: Params, device: str = "cpu") -> None:
        self.params = params
        self.device = device
        self.layer: str | None = None  # set by methods, for error messages

    def __call__(self, P: Any, A: torch.Tensor | ActivationStream) -> torch.Tensor:
        """Scores ``[K, C]`` from ``P`` (tensor or :class:`LazyP`) and activations ``A`` (``[N, K]``
        tensor or :class:`~dissectkit.labelling.streaming.ActivationStream`, read in streamed passes)."""
        import torch

        src = (P if isinstance(P, LazyP) else _DenseP(torch.as_tensor(P))).to(self.device)
        if isinstance(A, ActivationStream):
            stream = A
            self.layer = A.layer or self.layer  # for error messages
        else:
            stream = ActivationStream.from_tensor(A, self.layer, self.device)
        if stream.n_images != src.shape[0]:
            raise EvidenceError(
                f"Activations{of_layer(self.layer)} cover {stream.n_images} images but P covers {src.shape[0]}: "
                "both must come from the same probe images in the same order."
            )
        src.check_finite(self.layer)
        with torch.no_grad():
            if self.params.precision == "published":
                return self._published(_published_P(src), stream.materialise())
            return self._compute(src, stream)

    def from_embeddings(self, images: torch.Tensor, texts: torch.Tensor, A: Any) -> torch.Tensor:
        """Scores from image ``[N, D]`` and text ``[C, D]`` embeddings, ``P`` formed lazily."""
        return self(LazyP(images, texts), A)

    def _budget_elems(self) -> int:
        return max(1, int(self.params.max_memory_mb * 2**20 / 4))

    def _blocks(self, A: ActivationStream):
        """The stream's ``(start, block)`` pairs on this similarity's device."""
        for s, b in A.blocks():
            yield s, b.to(self.device)

    def _compute(self, src: Any, A: ActivationStream) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _published(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_tolerance(self, S: torch.Tensor, n_images: int) -> float:
        """How far two correct float32 evaluations of one score may lie apart (docs/methods.md,
        "Margins"): a margin between two concepts at or below it is a coin toss. Default: a few
        roundings of the largest score, over ``sqrt(N)`` accumulated terms."""
        return TOLERANCE_FACTOR * UNIT_ROUNDOFF * math.sqrt(max(n_images, 1)) * _max_abs(S)

    def __repr__(self) -> str:
        return f"{self.name}({self.params!r})"


def _max_abs(S: torch.Tensor) -> float:
    import torch

    finite = S[torch.isfinite(S)]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _published_P(src: Any) -> torch.Tensor:
    """``P`` as the published code forms it: image and text embeddings each divided by their row norm
    in float32, then one float32 matmul (a dense ``P`` is taken as given). Held whole, as published."""
    if isinstance(src, LazyP):
        images = src.I / src.I.norm(dim=-1, keepdim=True)
        texts = src.T / src.T.norm(dim=-1, keepdim=True)
        return images @ texts.T
    return src.P


PUBLISHED_BATCH = 10_000  # neurons / concepts per matmul block in the published cos and cos3


def _published_blocks(A: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """``A.T @ P`` in the published code's blocks of 10,000 neurons x 10,000 concepts."""
    import torch

    rows = []
    for t in range(0, A.shape[1], PUBLISHED_BATCH):
        At = A[:, t : t + PUBLISHED_BATCH].T
        rows.append(torch.cat([At @ P[:, c : c + PUBLISHED_BATCH] for c in range(0, P.shape[1], PUBLISHED_BATCH)], dim=1))
    return torch.cat(rows, dim=0)


def _safe_div_cols(x: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    import torch

    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


class Cos(_Similarity):
    name = "cos"

    def _compute(self, src: Any, A: ActivationStream) -> torch.Tensor:
        # one pass: sum_b A_b^T P_b (factored through I for a lazy P) and the column norms of A
        acc = sq = None
        for s, Ab in self._blocks(A):
            part = src.left_part(Ab, s).double()
            part_sq = (Ab * Ab).sum(0).double()
            acc = part if acc is None else acc.add_(part)
            sq = part_sq if sq is None else sq.add_(part_sq)
        M = _safe_div_cols(acc.T, sq.sqrt()).T.float()
        return _safe_div_cols(src.left_finish(M), src.col_norm())

    def _published(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        import torch

        # each column divided by its L2 norm (a zero column gives NaN, as published), then A^T P
        P = P / torch.norm(P, p=2, dim=0, keepdim=True)
        A = A / torch.norm(A, p=2, dim=0, keepdim=True)
        return _published_blocks(A, P)


class Cos3(_Similarity):
    name = "cos3"

    def _compute(self, src: Any, A: ActivationStream) -> torch.Tensor:
        import torch

        # pass 1: column means of A; pass 2: centred cubes, their products with P's and the norms
        total = None
        for _, Ab in self._blocks(A):
            part = Ab.sum(0).double()
            total = part if total is None else total.add_(part)
        mean = (total / A.n_images).float()
        N, C = src.shape
        K = mean.shape[0]
        Pmean = src.col_mean()
        S = torch.zeros((K, C), dtype=torch.float32, device=mean.device)
        sqA = torch.zeros(K, dtype=torch.float64, device=mean.device)
        sqP = torch.zeros(C, dtype=torch.float64, device=mean.device)
        step = max(1, min(self._budget_elems() // 2, 1 << 21) // max(C, 1))
        for s, Ab in self._blocks(A):
            A3 = (Ab - mean).pow_(3)
            sqA += (A3 * A3).sum(0).double()
            for r in range(0, A3.shape[0], step):
                Pb = (src.block(s + r, s + min(r + step, A3.shape[0])) - Pmean).pow_(3)
                sqP += (Pb * Pb).sum(0).double()
                S.addmm_(A3[r : r + step].T, Pb)
        S /= sqA.sqrt().clamp_min(1e-3).float().unsqueeze(1)
        return S / sqP.sqrt().clamp_min(1e-3).float()

    def _published(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        import torch

        P = (P - torch.mean(P, dim=0, keepdim=True)) ** 3
        A = (A - torch.mean(A, dim=0, keepdim=True)) ** 3
        P = P / torch.clip(torch.norm(P, p=2, dim=0, keepdim=True), 1e-3)
        A = A / torch.clip(torch.norm(A, p=2, dim=0, keepdim=True), 1e-3)
        return _published_blocks(A, P)


def _groups(lower: list[float], upper: list[float], lo: float, hi: float, max_size: int) -> list[list[int]]:
    """Split term indices into consecutive groups whose products stay within ``[lo, hi]``."""
    groups: list[list[int]] = []
    cur: list[int] = []
    plo = phi = 0.0  # log10 of the running bounds
    for j, (a, b) in enumerate(zip(lower, upper, strict=True)):
        la = math.log10(a) if a > 0 else -math.inf
        lb = math.log10(b)
        if cur and (len(cur) >= max_size or plo + la < lo or phi + lb > hi):
            groups.append(cur)
            cur, plo, phi = [], 0.0, 0.0
        cur.append(j)
        plo += la
        phi += lb
    if cur:
        groups.append(cur)
    return groups


class _PMI(_Similarity):
    """Shared engine of ``wpmi`` and ``soft_wpmi``: ``L[k, c] = sum_j log(alpha_j Q[i_j, c] + beta_j)``."""

    def _coefficients(self, k: int) -> tuple[list[float], list[float]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _terms(self, X: torch.Tensor, k: int) -> torch.Tensor:  # pragma: no cover - abstract
        """The published code's per-image terms ``[k, C]`` of one neuron's softmax rows ``X`` (float32)."""
        raise NotImplementedError

    def score_tolerance(self, S: torch.Tensor, n_images: int) -> float:
        """``4 u (1 + lam) B``: ``B = sum_j max_Q |log(alpha_j Q + beta_j)|`` bounds ``|L|`` (and the
        prior), and the scores are differences of float32 numbers of that size."""
        alpha, beta = self._coefficients(self.params.top_k)
        tiny = 2.0**-149
        bound = sum(max(abs(math.log(max(b, tiny))), abs(math.log(max(a + b, tiny)))) for a, b in zip(alpha, beta, strict=True))
        return TOLERANCE_FACTOR * UNIT_ROUNDOFF * (1.0 + abs(self.params.lam)) * bound

    def _check_k(self, N: int) -> int:
        k = self.params.top_k
        if k > N:
            raise EvidenceError(
                f"{self.name} with top_k={k} needs at least {k} probe images, but layer "
                f"{self.layer or '?'} has activations for only {N}. Use a larger probe set or lower top_k."
            )
        return k

    def _published(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """The published loop: softmax over concepts, each neuron's top-k rows (ties: lower image
        index), the sum over them of the log terms, one neuron at a time, all in float32; then the
        prior ``logsumexp_k L - log K`` and ``L - lam * prior``."""
        import torch

        prm = self.params
        k = self._check_k(P.shape[0])
        Q = torch.softmax(prm.a * P, dim=1)
        inds = top_indices(A, k)  # [K, k]
        K = A.shape[1]
        L = torch.empty((K, P.shape[1]), dtype=torch.float32, device=P.device)
        for n in range(K):
            L[n] = torch.sum(self._terms(Q.index_select(0, inds[n]), k), dim=0)
        prior = torch.logsumexp(L, dim=0, keepdim=True) - torch.log(K * torch.ones([1], device=P.device))
        return L - prm.lam * prior

    def _compute(self, src: Any, A: ActivationStream) -> torch.Tensor:
        import torch

        prm = self.params
        C = src.shape[1]
        k = self._check_k(src.shape[0])
        top, _ = stream_top(A, k, self.device)  # [K, k]
        L = self._layer_L(src, top)
        K = top.shape[0]
        step = max(1, self._budget_elems() // 4 // max(K, 1))
        for c0 in range(0, C, step):  # the prior couples every neuron of the layer
            Lc = L[:, c0 : c0 + step]
            prior = torch.logsumexp(Lc, dim=0) - math.log(K)
            L[:, c0 : c0 + step] = Lc - prm.lam * prior
        return L.float()

    def _layer_L(self, src: Any, top: torch.Tensor) -> torch.Tensor:
        """``L [K, C]`` (float64, before the prior) from each neuron's top-k rows ``top [K, k]``."""
        import torch

        prm = self.params
        N, C = src.shape
        alpha, beta = self._coefficients(top.shape[1])
        const = 0.0
        terms: list[tuple[int, float]] = []  # (rank j, shift d_j): term = alpha_j * (Q + d_j)
        for j, (al, be) in enumerate(zip(alpha, beta, strict=True)):
            if al == 0.0:
                const += math.log(be) if be > 0 else -math.inf
            else:
                const += math.log(al)
                terms.append((j, be / al))
        lower = [d for _, d in terms]
        upper = [1.0 + d for _, d in terms]
        g32 = _groups(lower, upper, -30.0, 30.0, 16)
        use64 = len(terms) > 0 and len(terms) / len(g32) < 4 and torch.device(self.device).type != "mps"
        dtype = torch.float64 if use64 else torch.float32
        groups = _groups(lower, upper, -290.0, 290.0, 64) if use64 else g32
        K = top.shape[0]
        dev = top.device
        L = torch.empty((K, C), dtype=torch.float64, device=dev)  # |L| ~ top_k * 6: keep float64
        budget = self._budget_elems()
        for ks, ke, rows in _neuron_groups(top, budget // max(C, 1), N):
            Q = _softmax_rows(src, rows, prm.a, 1 << 20)
            if dtype == torch.float64:
                Q = Q.double()
            remap = torch.full((N,), -1, dtype=torch.long, device=dev)
            remap[rows] = torch.arange(rows.numel(), device=dev)
            pos = remap[top[ks:ke]]
            kc = prm.chunk_size or max(16, min(512, (1 << 20) // max(C, 1)))
            for s in range(ks, ke, kc):
                e = min(s + kc, ke)
                L[s:e] = _log_prod_sum(Q, pos[s - ks : e - ks], terms, groups, dtype) + const
            del Q, remap, pos  # before the next group's rows are formed: one group held at a time
        return L


def _neuron_groups(top: torch.Tensor, max_rows: int, N: int):
    """Consecutive neuron ranges whose union of top-k rows fits ``max_rows`` (at least one neuron)."""
    import torch

    K = top.shape[0]
    max_rows = max(max_rows, top.shape[1])
    if torch.unique(top).numel() <= max_rows:
        yield 0, K, torch.unique(top)
        return
    s = 0
    while s < K:
        e = s + 1
        step = max(1, max_rows // top.shape[1])
        while e < K:
            cand = min(K, e + step)
            if torch.unique(top[s:cand]).numel() > max_rows:
                if step == 1:
                    break
                step = max(1, step // 2)
                continue
            e = cand
        yield s, e, torch.unique(top[s:e])
        s = e


def _softmax_rows(src: Any, rows: torch.Tensor, a: float, max_elems: int) -> torch.Tensor:
    """``softmax(a * P[rows])`` along concepts, formed block by block."""
    import torch

    C = src.shape[1]
    out = torch.empty((rows.numel(), C), dtype=torch.float32, device=rows.device)
    step = max(1, max_elems // max(C, 1))
    for s in range(0, rows.numel(), step):
        blk = src.rows(rows[s : s + step]).mul_(a)
        out[s : s + step] = torch.softmax(blk, dim=1)
    return out


def _log_prod_sum(Q, pos, terms, groups, dtype):
    """``sum_j log(Q[pos[:, j]] + d_j)`` with one logarithm per group of multiplied terms."""
    import torch

    kc = pos.shape[0]
    C = Q.shape[1]
    acc = torch.zeros((kc, C), dtype=torch.float64, device=Q.device)
    prod = torch.empty((kc, C), dtype=dtype, device=Q.device)
    buf = torch.empty((kc, C), dtype=dtype, device=Q.device)
    for grp in groups:
        j0, d0 = terms[grp[0]]
        torch.index_select(Q, 0, pos[:, j0], out=prod)
        prod.add_(d0)
        for t in grp[1:]:
            j, d = terms[t]
            torch.index_select(Q, 0, pos[:, j], out=buf)
            prod.mul_(buf.add_(d))
        acc.add_(prod.log_())
    return acc


class Wpmi(_PMI):
    name = "wpmi"

    def _coefficients(self, k: int) -> tuple[list[float], list[float]]:
        return [1.0] * k, [self.params.eps] * k

    def _terms(self, X: torch.Tensor, k: int) -> torch.Tensor:
        import torch

        return torch.log(X + self.params.eps)


class SoftWpmi(_PMI):
    name = "soft_wpmi"

    def _coefficients(self, k: int) -> tuple[list[float], list[float]]:
        prm = self.params
        p = [prm.p_start - (j / k) * (prm.p_start - prm.p_end) for j in range(k)]
        return p, [1.0 - pj + prm.eps for pj in p]

    def _terms(self, X: torch.Tensor, k: int) -> torch.Tensor:
        import torch

        prm = self.params
        # the memberships as the published code forms them: float32 from an integer arange
        p = (prm.p_start - (torch.arange(start=0, end=k) / k * (prm.p_start - prm.p_end))).unsqueeze(1).to(X.device)
        return torch.log(1 + p * (X - 1) + prm.eps)


class RankReorder(_Similarity):
    name = "rank_reorder"

    def _compute(self, src: Any, A: ActivationStream) -> torch.Tensor:
        import torch

        prm = self.params
        N, C = src.shape
        n = self._n_top(N)
        top, a = stream_top(A, n, self.device)  # [K, n], descending
        K = top.shape[0]
        dev = top.device
        asc = a.flip(1)
        gen = torch.Generator(device="cpu").manual_seed(prm.seed)
        perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(prm.n_permutations)]).to(dev)
        base = torch.stack([(asc - asc[:, perm]).abs().pow(prm.p).mean(1) for perm in perms]).mean(0)
        S = torch.empty((K, C), dtype=torch.float32, device=dev)
        budget = self._budget_elems()
        tile = min(budget // 8, 1 << 22)  # [neurons, n, concepts] values per step (~7 temporaries)
        cb = max(1, min(C, tile // max(n, 1)))
        kc = prm.chunk_size or max(1, tile // (n * cb))
        for ks, ke, rows in _neuron_groups(top, budget // 4 // max(C, 1), N):
            Prow = torch.empty((rows.numel(), C), dtype=torch.float32, device=dev)
            step = max(1, budget // 4 // max(C, 1))
            for s in range(0, rows.numel(), step):
                Prow[s : s + step] = src.rows(rows[s : s + step])
            remap = torch.full((N,), -1, dtype=torch.long, device=dev)
            remap[rows] = torch.arange(rows.numel(), device=dev)
            for s in range(ks, ke, kc):
                e = min(s + kc, ke)
                pos = remap[top[s:e]]  # [kc, n]
                for c0 in range(0, C, cb):
                    Pg = Prow[:, c0 : c0 + cb][pos]  # [kc, n, cb]
                    meanP = Pg.mean(1)
                    order = torch.sort(Pg, dim=1, stable=True).indices
                    a_s = a[s:e].unsqueeze(2).expand_as(Pg).gather(1, order)
                    err = (a_s - asc[s:e].unsqueeze(2)).abs_().pow_(prm.p).mean(1)
                    err = err / meanP.clamp_min(1e-12).pow(prm.scale_p)
                    S[s:e, c0 : c0 + cb] = err
            del Prow, remap  # one group's rows held at a time
        flat = base <= 0  # every top activation equal: no baseline, scores 0
        S = S / torch.where(flat, torch.ones_like(base), base).unsqueeze(1)
        S[flat] = 0.0
        return -S

    def _n_top(self, N: int) -> int:
        n = math.floor(N * self.params.top_fraction)
        if n < 1:
            need = math.ceil(1 / self.params.top_fraction)
            raise EvidenceError(
                f"rank_reorder with top_fraction={self.params.top_fraction} needs at least {need} probe images, "
                f"but layer {self.layer or '?'} has {N}."
            )
        return n

    def score_tolerance(self, S: torch.Tensor, n_images: int) -> float:
        """Means over the ``n`` top images of cubed differences: ``4 u sqrt(n) max |S|``."""
        return TOLERANCE_FACTOR * UNIT_ROUNDOFF * math.sqrt(self._n_top(n_images)) * _max_abs(S)

    def _published(self, P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """The published per-neuron loop in float32 (ranks by a double argsort, the error's mean over the
        top images divided by the permutation baseline and by the mean similarity to ``scale_p``). The
        published baseline draws unseeded permutations; these are seeded (``seed``), and, as in the
        default arithmetic, a neuron whose top activations are all equal scores 0 and the mean similarity
        is clamped at 1e-12 (the published code gives NaN there)."""
        import torch

        prm = self.params
        n = self._n_top(P.shape[0])
        inds = top_indices(A, n)  # [K, n], descending, ties by the lower image index
        gen = torch.Generator(device="cpu").manual_seed(prm.seed)
        perms = [torch.randperm(n, generator=gen).to(P.device) for _ in range(prm.n_permutations)]
        K, C = A.shape[1], P.shape[1]
        S = torch.empty((K, C), dtype=torch.float32, device=P.device)
        for k in range(K):
            clip = P.index_select(0, inds[k])  # [n, C]
            avg = torch.mean(clip, dim=0, keepdim=True)
            ranks = torch.argsort(torch.argsort(clip, dim=0, stable=True), dim=0, stable=True)
            target = A[inds[k], k].unsqueeze(1)  # [n, 1], descending
            ascending = torch.flip(target, dims=[0])
            base = torch.mean(torch.abs(ascending - torch.cat([ascending[perm] for perm in perms], dim=1)) ** prm.p)
            if float(base) <= 0:
                S[k] = 0.0
                continue
            reorg = ascending.expand(-1, C).gather(dim=0, index=ranks)
            err = torch.mean(torch.abs(target - reorg) ** prm.p, dim=0, keepdim=True) / base
            S[k] = (err / avg.clamp_min(1e-12) ** prm.scale_p)[0]
        return -S


def score_tolerance(similarity: Any, S: torch.Tensor, n_images: int) -> float | None:
    """The rounding tolerance of a similarity's scores (``None`` for a third-party similarity)."""
    return similarity.score_tolerance(S, n_images) if isinstance(similarity, _Similarity) else None


def has_precision(similarity_params: type[Params]) -> bool:
    """Whether a similarity's params take ``precision`` (the built-in ones do)."""
    return "precision" in getattr(similarity_params, "model_fields", {})


SIMILARITIES = {
    "cos": (Cos, CosParams, "cosine of activation and concept-similarity columns (dead neuron: 0)"),
    "cos3": (Cos3, Cos3Params, "cosine of centred, cubed columns"),
    "wpmi": (Wpmi, WpmiParams, "weighted pointwise mutual information over each neuron's top_k images"),
    "soft_wpmi": (SoftWpmi, SoftWpmiParams, "CLIP-Dissect's default: soft-membership WPMI (best)"),
    "rank_reorder": (RankReorder, RankReorderParams, "rank-order disagreement of top images (negated)"),
}


def _factory(cls):
    def make(params: Params, ctx: Any) -> _Similarity:
        return cls(params, getattr(ctx, "device", "cpu"))

    return make


@hookimpl
def dissectkit_register_similarities(register: Register) -> None:
    for name, (cls, params, desc) in SIMILARITIES.items():
        register(name, _factory(cls), params=params, description=desc, licence=None)
