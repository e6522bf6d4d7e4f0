"""Streaming statistics over a layer's activations read as row blocks, never the whole ``[N, K]``
matrix: the validated :class:`ActivationStream` with its per-neuron :class:`Moments` (the one dead-neuron
rule) and the one running top-k, :class:`RunningTopK` (docs/methods.md, "Evidence: what a method reads")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from dissectkit.base.errors import EvidenceError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ActivationStream",
    "Moments",
    "Payload",
    "RunningTopK",
    "TopK",
    "check_finite",
    "key_value",
    "of_layer",
    "order_key",
    "stream_top",
    "tensor_blocks",
    "top_indices",
]

BLOCK_ELEMS = 1 << 22  # values per row block when a materialised tensor is streamed (16 MB float32)


def of_layer(layer: str | None) -> str:
    """`` of layer 'name'`` for messages (nothing without a layer)."""
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
        f"{what}{of_layer(layer)} contain NaN or inf for neuron {bad[0]}"
        + (f" (neurons {bad[:5]}{more})" if len(bad) > 1 else "")
        + ". Check the target's weights and the probe images (e.g. 16-bit data not scaled to [0, 1])."
    )


def tensor_blocks(A: torch.Tensor, rows: int | None = None) -> Iterator[torch.Tensor]:
    """Row blocks (views) of a materialised ``[N, K]`` tensor, about :data:`BLOCK_ELEMS` values each."""
    step = rows or max(1, BLOCK_ELEMS // max(1, A.shape[1] if A.ndim == 2 else 1))
    for s in range(0, A.shape[0], step):
        yield A[s : s + step]


def order_key(x: torch.Tensor) -> torch.Tensor:
    """Monotone map float32 -> int32 (``a < b`` iff ``key(a) < key(b)``; -0.0 sorts before 0.0)."""
    import torch

    b = x.contiguous().view(torch.int32)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


def key_value(key: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`order_key` (int32 keys -> float32 values)."""
    import torch

    k = key.to(torch.int32)
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).view(torch.float32)


_LOW = 0xFFFFFFFF
_EMPTY = -(1 << 63)  # the smallest int64: an empty candidate slot

Payload = Callable[["torch.Tensor", "torch.Tensor"], Any]
"""``payload(neurons [m], positions [m])`` -> ``[m, ...]``: what a (neuron, row) pair entering a
:class:`RunningTopK` keeps with it (e.g. the neuron's map on that image); ``positions`` index the
rows of the block just given."""


def _rank_keys(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering ``(value descending, row ascending)`` as ``key descending``: the value's
    order key in the high 32 bits (-0.0 counted as 0.0, as ``==`` does; NaN as -inf), ``~row`` in
    the low 32."""
    import torch

    v = (values + 0.0).to(torch.float32)
    v = torch.where(v.isnan(), float("-inf"), v)
    return (order_key(v).to(torch.int64) << 32) | (_LOW - rows)


class TopK(NamedTuple):
    """Each neuron's kept rows, best first: ``indices``/``values`` ``[K, m]`` and ``payload``
    ``[K, m, ...]`` (``None`` when none was kept)."""

    indices: torch.Tensor
    values: torch.Tensor
    payload: torch.Tensor | None


class RunningTopK:
    """Each neuron's ``k`` largest values over a stream of row blocks, with their row indices and,
    optionally, a payload per kept (neuron, row) pair, in the order of :func:`top_indices`. The running
    set is kept as int64 keys ``(value, ~row)``, so one ``topk`` on keys applies that rule exactly."""

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k
        self.seen = 0  # rows merged so far
        self._keys: torch.Tensor | None = None  # [K, m], m <= k, unordered
        self._payload: torch.Tensor | None = None  # [K, m, ...], aligned with _keys
        self._kth: torch.Tensor | None = None  # [K] float32, the k-th value once m == k
        self._pending: list[torch.Tensor] = []  # candidate keys not merged yet
        self._pending_w = 0

    def update(self, block: torch.Tensor, rows: int | Any, payload: Payload | None = None) -> None:
        """Merge the rows of ``block`` ``[n, K]``: ``rows`` is the first one's index (rows ``rows ..
        rows + n``) or the ``n`` ascending indices, all above the rows merged before."""
        import torch

        n = block.shape[0]
        if n == 0:
            return
        if self.seen and (payload is None) != (self._payload is None):
            raise ValueError("give a payload with every block or with none")
        if isinstance(rows, int):
            last = rows + n - 1
            rows = torch.arange(rows, rows + n, device=block.device)
        else:
            rows = torch.as_tensor(rows, dtype=torch.int64)
            last = int(rows[-1])
            rows = rows.to(block.device)
        if last >= _LOW:
            raise ValueError("RunningTopK handles at most 2**32 - 1 rows")
        step = max(self.k, 512)  # pieces: the k-th value rises between them, fewer candidates
        for s in range(0, n, step):
            self._update(block[s : s + step], rows[s : s + step], s, payload)
        self.seen += n

    def _update(self, block: torch.Tensor, rows: torch.Tensor, offset: int, payload: Payload | None) -> None:
        import torch

        n, K = block.shape
        if self._kth is None:  # fewer than k rows held: the first rows all enter
            m = min(n, self.k - (0 if self._keys is None else self._keys.shape[1]))
            where = torch.arange(offset, offset + m, device=block.device).expand(K, m)
            self._take(_rank_keys(block[:m].T, rows[:m].unsqueeze(0)), where, payload)
            if m == n:
                return
            block, rows, offset, n = block[m:], rows[m:], offset + m, n - m
        assert self._kth is not None  # k rows are held
        cand = (block > self._kth).nonzero()  # [m, 2] (row, neuron), few once warmed up
        if cand.numel() == 0:
            return
        r, c = cand[:, 0], cand[:, 1]
        order = torch.sort(c, stable=True).indices
        r, c = r[order], c[order]
        counts = torch.bincount(c, minlength=K)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(c.numel(), device=c.device) - first[c]
        buf = torch.full((K, int(counts.max())), _EMPTY, dtype=torch.int64, device=block.device)
        buf[c, slot] = _rank_keys(block[r, c], rows[r])
        if payload is not None:
            where = torch.zeros_like(buf)
            where[c, slot] = r + offset
            self._take(buf, where, payload)
            return
        # candidates wait until about k of them have come (the k-th value used to filter them is
        # a lower bound meanwhile): about one topk per k candidates, also for a large k
        self._pending.append(buf)
        self._pending_w += buf.shape[1]
        if self._pending_w >= max(self.k, 64):
            self._merge()

    def _merge(self) -> None:
        import torch

        if self._pending:
            self._take(torch.cat(self._pending, 1))
            self._pending, self._pending_w = [], 0

    def _take(self, new: torch.Tensor, where: torch.Tensor | None = None, payload: Payload | None = None) -> None:
        """Merge the candidate keys ``new`` ``[K, w]`` (at block positions ``where``) into the kept set."""
        import torch

        keys, kept = self._keys, self._payload
        if keys is None or keys.shape[1] < self.k or kept is None or payload is None or where is None:
            if payload is not None and where is not None:  # filling: every pair enters
                K, m = new.shape
                got = torch.as_tensor(payload(torch.arange(K, device=new.device).repeat_interleave(m), where.flatten()))
                got = got.reshape(K, m, *got.shape[1:])
                self._payload = got if kept is None else torch.cat([kept, got], 1)
            keys = new if keys is None else torch.cat([keys, new], 1)
            keys = keys.topk(self.k, dim=1, sorted=False).values if keys.shape[1] > self.k else keys
            self._keys = keys
        else:  # full, with a payload: each entering pair takes the slot of a pair it pushes out
            best = torch.cat([keys, new], 1).topk(self.k, dim=1, sorted=False).indices
            keep = torch.zeros((new.shape[0], self.k + new.shape[1]), dtype=torch.bool, device=new.device)
            keep.scatter_(1, best, True)
            out_r, out_j = (~keep[:, : self.k]).nonzero(as_tuple=True)  # as many per neuron as enter,
            in_r, in_j = keep[:, self.k :].nonzero(as_tuple=True)  # both in neuron order
            keys[out_r, out_j] = new[in_r, in_j]
            got = torch.as_tensor(payload(in_r, where[in_r, in_j]))
            kept[out_r.to(got.device), out_j.to(got.device)] = got
        if keys.shape[1] == self.k:
            self._kth = key_value(keys.amin(1) >> 32)

    def kept_rows(self) -> torch.Tensor:
        """The rows kept now, ``[K, m]`` in no particular order (cheaper than :meth:`result`)."""
        import torch

        self._merge()
        return torch.empty((0, 0), dtype=torch.int64) if self._keys is None else _LOW - (self._keys & _LOW)

    def result(self) -> TopK:
        """The kept rows of every neuron (``m = min(k, seen)`` of them), best first."""
        import torch

        self._merge()
        if self._keys is None:
            none = torch.empty((0, 0), dtype=torch.int64)
            return TopK(none, none.float(), None)
        keys, order = torch.sort(self._keys, dim=1, descending=True)
        payload = None
        if self._payload is not None:
            payload = self._payload[torch.arange(len(order)).unsqueeze(1), order.to(self._payload.device)]
        return TopK(_LOW - (keys & _LOW), key_value(keys >> 32), payload)


def top_indices(A: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[K, k]`` of each column's ``k`` largest values of ``A[N, K]``, in descending order,
    ties broken by the lower image index (a :class:`RunningTopK` over ``A``, deterministic on every device)."""
    if k > A.shape[0]:
        raise ValueError(f"top-{k} needs at least {k} rows; A has {A.shape[0]}")
    top = RunningTopK(k)
    top.update(A, 0)
    return top.result().indices


@dataclass
class Moments:
    """Per-neuron ``min`` and ``max`` (exact, float32) over ``count`` rows."""

    min: torch.Tensor
    max: torch.Tensor
    count: int

    @classmethod
    def of(cls, block: torch.Tensor) -> Moments:
        return cls(block.amin(0), block.amax(0), block.shape[0])

    def add(self, block: torch.Tensor) -> Moments:
        import torch

        torch.minimum(self.min, block.amin(0), out=self.min)
        torch.maximum(self.max, block.amax(0), out=self.max)
        self.count += block.shape[0]
        return self

    @property
    def constant(self) -> torch.Tensor:
        """Boolean ``[K]``: the column has one value over every row (for activations: a dead neuron)."""
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
            raise EvidenceError(f"Activations{of_layer(layer)} must be [images, neurons], got shape {tuple(A.shape)}.")
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
            raise EvidenceError(f"The activation stream{of_layer(self.layer)} yielded no blocks.")
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
                    f"Activation blocks{of_layer(self.layer)} must be [images, neurons], got shape {tuple(b.shape)}."
                )
            if self._K is None:
                self._K = b.shape[1]
            elif b.shape[1] != self._K:
                raise EvidenceError(
                    f"Activation blocks{of_layer(self.layer)} disagree on the number of neurons: "
                    f"{b.shape[1]} after {self._K}."
                )
            if start + b.shape[0] > self.n_images:
                raise self._count_error(f"at least {start + b.shape[0]}")
            b = b.to(device=self.device, dtype=torch.float32)
            check_finite(b, self.layer)
            if record:
                moments = Moments.of(b) if moments is None else moments.add(b)
            yield start, b
            start += b.shape[0]
        if start != self.n_images:
            raise self._count_error(str(start))
        if record and moments is not None:
            self._moments = moments

    def _count_error(self, got: str) -> EvidenceError:
        return EvidenceError(
            f"Activations{of_layer(self.layer)} cover {got} images but the image embeddings cover "
            f"{self.n_images}: both must come from the same probe images in the same order."
        )

    @property
    def moments(self) -> Moments:
        """Per-neuron moments over all rows (one pass when no complete pass has run yet)."""
        if self._moments is None:
            for _ in self.blocks():
                pass
        if self._moments is None:
            raise EvidenceError(f"No probe images to label{of_layer(self.layer)}.")
        return self._moments

    @property
    def dead(self) -> torch.Tensor:
        """Boolean ``[K]``: neurons whose activation is constant over the probe images."""
        return self.moments.constant

    def materialise(self) -> torch.Tensor:
        """The whole ``[N, K]`` matrix (only for third-party similarities that need it)."""
        import torch

        return torch.cat([b for _, b in self.blocks()], 0)


def stream_top(stream: ActivationStream, k: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices [K, k], values [K, k])`` of each neuron's ``k`` largest activations, one pass
    (the blocks moved to ``device`` when given)."""
    top = RunningTopK(k)
    for start, block in stream.blocks():
        top.update(block if device is None else block.to(device), start)
    if top.seen < k:
        raise ValueError(f"only {top.seen} rows were streamed; top-{k} needs at least {k}")
    return top.result()[:2]
