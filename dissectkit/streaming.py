"""Streaming statistics over a layer's activations, read as a sequence of row blocks.

Labelling never holds a layer's ``[N, K]`` activation matrix: methods and similarities read row
blocks (``[n_i, K]`` float32, e.g. the cache's chunks) and keep per-neuron state only:

- :class:`ActivationStream` validates the blocks (shape, finiteness, total rows) and records each
  neuron's min / max / sum / sum of squares on its first full pass (:class:`Moments`), so a dead
  (constant) neuron is known without a pass of its own;
- :class:`RunningTopK` keeps each neuron's ``k`` largest values and their row indices by a running
  merge, in exactly the order of :func:`top_indices` (descending, ties by the lower row index).

Memory: ``O(K * k + K + block)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dissectkit.errors import EvidenceError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ActivationStream",
    "Moments",
    "RunningTopK",
    "check_finite",
    "stream_top",
    "tensor_blocks",
    "top_indices",
]

BLOCK_ELEMS = 1 << 22  # values per row block when a materialised tensor is streamed (16 MB float32)


def _of(layer: str | None) -> str:
    return f" of layer {layer!r}" if layer else ""


def check_finite(A: torch.Tensor, layer: str | None = None, what: str = "Activations") -> None:
    """Raise :class:`EvidenceError` naming the layer and the first neurons with NaN/inf values."""
    import torch

    finite = torch.isfinite(A)
    if bool(finite.all()):
        return
    bad = (~finite).any(0).nonzero().flatten().tolist()
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise EvidenceError(
        f"{what}{_of(layer)} contain NaN or inf for neuron {bad[0]}"
        + (f" (neurons {bad[:5]}{more})" if len(bad) > 1 else "")
        + ". Check the target's weights and the probe images (e.g. 16-bit data not scaled to [0, 1])."
    )


def tensor_blocks(A: torch.Tensor, rows: int | None = None) -> Iterator[torch.Tensor]:
    """Row blocks (views) of a materialised ``[N, K]`` tensor, about :data:`BLOCK_ELEMS` values each."""
    step = rows or max(1, BLOCK_ELEMS // max(1, A.shape[1] if A.ndim == 2 else 1))
    for s in range(0, A.shape[0], step):
        yield A[s : s + step]


# ---------------------------------------------------------------------------------------------
# deterministic top-k
def top_indices(A: torch.Tensor, k: int, chunk: int = 256) -> torch.Tensor:
    """Indices ``[K, k]`` of each column's ``k`` largest values of ``A[N, K]``, in descending order,
    ties broken by the lower image index (deterministic on every device)."""
    import torch

    N, K = A.shape
    out = torch.empty((K, k), dtype=torch.long, device=A.device)
    for s in range(0, K, chunk):
        Ac = A[:, s : s + chunk]
        vals, idx = torch.topk(Ac, k, dim=0, sorted=True)
        thr = vals[-1]
        n_eq = (Ac == thr).sum(0)
        n_eq_in = (vals == thr).sum(0)
        rows = idx.T.contiguous()  # [kc, k]
        ambiguous = (n_eq > n_eq_in).nonzero().flatten()
        if ambiguous.numel():  # ties across the k-th value: take the lowest indices among them
            sub = Ac[:, ambiguous]
            t = thr[ambiguous]
            gt = sub > t
            eq = sub == t
            keep = gt | (eq & (eq.cumsum(0) <= (k - gt.sum(0))))
            rows[ambiguous] = keep.T.nonzero()[:, 1].view(-1, k)
        rows, _ = rows.sort(dim=1)
        v = Ac.T.gather(1, rows)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices
        out[s : s + chunk] = rows.gather(1, order)
    return out


class RunningTopK:
    """Each neuron's ``k`` largest values over a stream of row blocks, with their global row indices.

    Candidates are buffered per neuron in ascending row order; when the buffer is full it is cut
    back to the ``k`` best (:func:`top_indices` on the buffer, whose position order is the row
    order, so ties keep the lower row). The result equals ``top_indices`` on the whole matrix.
    Memory: ``K * (k + spare)`` values and indices.
    """

    def __init__(self, k: int, spare: int | None = None) -> None:
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.spare = spare
        self._vals: torch.Tensor | None = None
        self._idx: torch.Tensor | None = None
        self._fill = 0

    def update(self, block: torch.Tensor, start: int) -> None:
        """Merge rows ``start .. start + len(block)`` (``block`` is ``[n, K]``)."""
        import torch

        n, K = block.shape
        if self._vals is None:
            spare = self.spare or max(self.k, min(4096, max(256, BLOCK_ELEMS // 4 // max(K, 1))))
            cap = self.k + spare
            self._vals = torch.empty((K, cap), dtype=block.dtype, device=block.device)
            self._idx = torch.empty((K, cap), dtype=torch.long, device=block.device)
        cap = self._vals.shape[1]
        pos = 0
        while pos < n:
            if self._fill == cap:
                self._reduce()
            take = min(n - pos, cap - self._fill)
            f = self._fill
            self._vals[:, f : f + take] = block[pos : pos + take].T
            self._idx[:, f : f + take] = torch.arange(start + pos, start + pos + take, device=block.device)
            self._fill += take
            pos += take

    def _reduce(self) -> None:
        if self._fill <= self.k:
            return
        f = self._fill
        sel = top_indices(self._vals[:, :f].T, self.k).sort(dim=1).values  # keep the row order
        v = self._vals[:, :f].gather(1, sel)
        i = self._idx[:, :f].gather(1, sel)
        self._vals[:, : self.k] = v
        self._idx[:, : self.k] = i
        self._fill = self.k

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices [K, k], values [K, k])`` in descending value order, ties by the lower row."""
        if self._vals is None or self._fill < self.k:
            raise ValueError(f"only {self._fill} rows were streamed; top-{self.k} needs at least {self.k}")
        f = self._fill
        sel = top_indices(self._vals[:, :f].T, self.k)
        return self._idx[:, :f].gather(1, sel), self._vals[:, :f].gather(1, sel)


# ---------------------------------------------------------------------------------------------
# moments and the validated stream
@dataclass
class Moments:
    """Per-neuron ``min``, ``max`` (exact, the blocks' dtype), ``sum`` and ``sumsq`` (float64), ``count``."""

    min: torch.Tensor
    max: torch.Tensor
    sum: torch.Tensor
    sumsq: torch.Tensor
    count: int

    @classmethod
    def of(cls, block: torch.Tensor) -> Moments:
        b64 = block.double()
        return cls(block.amin(0), block.amax(0), b64.sum(0), (b64 * b64).sum(0), block.shape[0])

    def add(self, block: torch.Tensor) -> None:
        import torch

        torch.minimum(self.min, block.amin(0), out=self.min)
        torch.maximum(self.max, block.amax(0), out=self.max)
        b64 = block.double()
        self.sum += b64.sum(0)
        self.sumsq += (b64 * b64).sum(0)
        self.count += block.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    @property
    def constant(self) -> torch.Tensor:
        """Boolean ``[K]``: the neuron has one value over every row (a dead neuron)."""
        return self.min == self.max


class ActivationStream:
    """Validated float32 row blocks ``(start, [n_i, K])`` of one layer's activations over ``n_images`` rows.

    ``source`` is a zero-argument callable returning a fresh iterable of blocks. Each pass checks
    the shapes, NaN/inf (naming the neuron) and that the blocks cover exactly ``n_images`` rows;
    the first complete pass also records :attr:`moments`.
    """

    def __init__(
        self,
        source: Callable[[], Iterable[Any]],
        n_images: int,
        layer: str | None = None,
        device: Any = "cpu",
    ) -> None:
        self.source = source
        self.n_images = n_images
        self.layer = layer
        self.device = device
        self._moments: Moments | None = None
        self._K: int | None = None

    @classmethod
    def from_tensor(cls, A: Any, layer: str | None = None, device: Any = "cpu", rows: int | None = None) -> ActivationStream:
        """A stream over a materialised ``[N, K]`` tensor (row-block views, nothing copied up front)."""
        import torch

        A = torch.as_tensor(A)
        if A.ndim != 2:
            raise EvidenceError(f"Activations{_of(layer)} must be [images, neurons], got shape {tuple(A.shape)}.")
        stream = cls(lambda: tensor_blocks(A, rows), A.shape[0], layer, device)
        stream._K = A.shape[1]
        return stream

    @property
    def n_neurons(self) -> int:
        """K (reads the first block when no block has been seen yet)."""
        if self._K is None:
            for _ in self.blocks():
                break
        if self._K is None:
            raise EvidenceError(f"The activation stream{_of(self.layer)} yielded no blocks.")
        return self._K

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        import torch

        record = self._moments is None
        moments: Moments | None = None
        start = 0
        for raw in self.source():
            b = torch.as_tensor(raw)
            if b.ndim != 2:
                raise EvidenceError(
                    f"Activation blocks{_of(self.layer)} must be [images, neurons], got shape {tuple(b.shape)}."
                )
            if self._K is None:
                self._K = b.shape[1]
            elif b.shape[1] != self._K:
                raise EvidenceError(
                    f"Activation blocks{_of(self.layer)} disagree on the number of neurons: "
                    f"{b.shape[1]} after {self._K}."
                )
            if start + b.shape[0] > self.n_images:
                raise self._count_error(f"at least {start + b.shape[0]}")
            b = b.to(device=self.device, dtype=torch.float32)
            check_finite(b, self.layer)
            if record:
                if moments is None:
                    moments = Moments.of(b)
                else:
                    moments.add(b)
            yield start, b
            start += b.shape[0]
        if start != self.n_images:
            raise self._count_error(str(start))
        if record and moments is not None:
            self._moments = moments

    def _count_error(self, got: str) -> EvidenceError:
        return EvidenceError(
            f"Activations{_of(self.layer)} cover {got} images but the image embeddings cover "
            f"{self.n_images}: both must come from the same probe images in the same order."
        )

    @property
    def moments(self) -> Moments:
        """Per-neuron moments over all rows (one pass when no complete pass has run yet)."""
        if self._moments is None:
            for _ in self.blocks():
                pass
        if self._moments is None:
            raise EvidenceError(f"No probe images to label{_of(self.layer)}.")
        return self._moments

    @property
    def dead(self) -> torch.Tensor:
        """Boolean ``[K]``: neurons whose activation is constant over the probe images."""
        return self.moments.constant

    def materialise(self) -> torch.Tensor:
        """The whole ``[N, K]`` matrix (only for third-party similarities that need it)."""
        import torch

        return torch.cat([b for _, b in self.blocks()], 0)


def stream_top(stream: ActivationStream, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices [K, k], values [K, k])`` of each neuron's ``k`` largest activations, one pass."""
    top = RunningTopK(k)
    for start, block in stream.blocks():
        top.update(block, start)
    return top.result()
