"""Helpers shared by the built-in methods: evidence checks, text encoding, ranked lists, dead neurons."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dissectkit.base.errors import EvidenceError
from dissectkit.labelling.streaming import ActivationStream

_ROWS = 1 << 16  # image rows per block when checking embeddings

if TYPE_CHECKING:
    import torch

    from dissectkit.labelling.evidence import Evidence


def checked_inputs(evidence: Evidence, device: str = "cpu") -> tuple[ActivationStream, torch.Tensor]:
    """The activations as a validated :class:`ActivationStream` (float32 blocks on ``device``; checked
    for NaN/inf and row count as they stream) and the image embeddings ``[N, D]``, validated."""
    import torch

    V = torch.as_tensor(evidence.image_embeddings).to(device=device, dtype=torch.float32)
    if V.ndim != 2:
        raise EvidenceError(f"Layer {evidence.layer!r}: image embeddings must be [images, dim]; got {tuple(V.shape)}.")
    if evidence.activation_chunks is None:
        A = torch.as_tensor(evidence.activations)
        if A.ndim != 2:
            raise EvidenceError(
                f"Layer {evidence.layer!r}: activations must be [images, neurons] and image embeddings "
                f"[images, dim]; got {tuple(A.shape)} and {tuple(V.shape)}."
            )
        if A.shape[0] != V.shape[0]:
            raise EvidenceError(
                f"Layer {evidence.layer!r}: {A.shape[0]} images have activations but {V.shape[0]} have "
                "dissector embeddings; both must cover the same probe images in the same order."
            )
    if V.shape[0] == 0:
        raise EvidenceError(f"Layer {evidence.layer!r}: no probe images to label with.")
    for s in range(0, V.shape[0], _ROWS):  # in row blocks: no [N, D] temporary
        part = V[s : s + _ROWS]
        if not bool(torch.isfinite(part).all()):
            bad = (s + (~torch.isfinite(part)).any(1).nonzero().flatten()).tolist()
            raise EvidenceError(
                f"Image embeddings used for layer {evidence.layer!r} contain NaN or inf (images {bad[:5]}); "
                "check the dissector and the probe images."
            )
    return ActivationStream(evidence.iter_activations, V.shape[0], evidence.layer, device), V


def unit_rows(V: torch.Tensor) -> torch.Tensor:
    """``V`` with L2-normalised rows: ``V`` itself when its rows already have unit norm (to 1e-5,
    as the engine's embeddings do), else a normalised copy - no ``[N, D]`` copy in the usual case."""
    import torch

    norms = torch.linalg.vector_norm(V, dim=1)
    if V.shape[0] and float((norms - 1).abs().max()) <= 1e-5:
        return V
    return torch.nn.functional.normalize(V, dim=1)


def encode(evidence: Evidence, texts: list[str], device: str = "cpu") -> torch.Tensor:
    """L2-normalised float32 text embeddings ``[len(texts), D]``, validated."""
    import torch

    if not texts:
        raise EvidenceError(f"Layer {evidence.layer!r}: the concept set is empty.")
    T = torch.as_tensor(evidence.encode_texts(list(texts))).to(device=device, dtype=torch.float32)
    if T.ndim != 2 or T.shape[0] != len(texts):
        raise EvidenceError(f"encode_texts returned shape {tuple(T.shape)} for {len(texts)} texts.")
    if not bool(torch.isfinite(T).all()):
        bad = (~torch.isfinite(T)).any(1).nonzero().flatten().tolist()
        raise EvidenceError(f"Text embeddings contain NaN or inf for {[texts[i] for i in bad[:5]]}.")
    return torch.nn.functional.normalize(T, dim=1)


def apply_template(template: str | None, texts: list[str]) -> list[str]:
    if not template:
        return list(texts)
    if "{}" not in template:
        raise EvidenceError(f"Prompt template {template!r} has no '{{}}' placeholder for the concept.")
    return [template.format(t) for t in texts]


def top_m_lists(S: torch.Tensor, names: list[str], m: int,
                runner_up: dict[int, float] | None = None) -> list[list[tuple[str, float]]]:
    """Each row's ``m`` best ``(concept, score)`` pairs, descending (ties: lower concept index).
    With ``m == 1`` and a ``runner_up`` dict, each row's second-best score goes into it (the
    ``margins`` column group reads it)."""
    import torch

    S = S.detach().float().cpu()
    m = min(m, S.shape[1])
    keep = min(max(m, 2), S.shape[1]) if runner_up is not None else m
    order = torch.sort(S, dim=1, descending=True, stable=True).indices[:, :keep]
    vals = S.gather(1, order)
    if runner_up is not None and keep > m:
        runner_up.update({k: float(v) for k, v in enumerate(vals[:, m].tolist())})
    return [
        [(names[j], float(v)) for j, v in zip(row[:m], vrow[:m], strict=True)]
        for row, vrow in zip(order.tolist(), vals.tolist(), strict=True)
    ]


def blank_dead(neurons: list[list[tuple[str, float]]], dead: torch.Tensor,
               keep: torch.Tensor | None = None) -> dict[int, str]:
    """Empty the lists of dead neurons (``dead``: boolean ``[K]``) and return the ``reasons``; a dead
    neuron where ``keep`` is true keeps its list (``precision: published``: the published code labels
    constant neurons) and its reason ``dead``."""
    reasons = {}
    for k in dead.nonzero().flatten().tolist():
        if keep is None or not bool(keep[k]):
            neurons[k] = []
        reasons[k] = "dead"
    return reasons


def device_of(method: Any, evidence: Evidence) -> str:
    return evidence.device or getattr(method, "device", None) or "cpu"
