"""Helpers shared by the built-in methods: evidence checks, text encoding, ranked lists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dissectkit.builtin.similarities import check_finite
from dissectkit.errors import EvidenceError

if TYPE_CHECKING:
    import torch

    from dissectkit.methods import Evidence


def checked_inputs(evidence: Evidence, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``[N, K]`` and image embeddings ``[N, D]`` as float32 on ``device``, validated."""
    import torch

    A = torch.as_tensor(evidence.activations).to(device=device, dtype=torch.float32)
    V = torch.as_tensor(evidence.image_embeddings).to(device=device, dtype=torch.float32)
    if A.ndim != 2 or V.ndim != 2:
        raise EvidenceError(
            f"Layer {evidence.layer!r}: activations must be [images, neurons] and image embeddings "
            f"[images, dim]; got {tuple(A.shape)} and {tuple(V.shape)}."
        )
    if A.shape[0] != V.shape[0]:
        raise EvidenceError(
            f"Layer {evidence.layer!r}: {A.shape[0]} images have activations but {V.shape[0]} have "
            "dissector embeddings; both must cover the same probe images in the same order."
        )
    if A.shape[0] == 0:
        raise EvidenceError(f"Layer {evidence.layer!r}: no probe images to label with.")
    check_finite(A, evidence.layer)
    if not bool(torch.isfinite(V).all()):
        bad = (~torch.isfinite(V)).any(1).nonzero().flatten().tolist()
        raise EvidenceError(
            f"Image embeddings used for layer {evidence.layer!r} contain NaN or inf (images {bad[:5]}); "
            "check the dissector and the probe images."
        )
    return A, V


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


def top_m_lists(S: torch.Tensor, names: list[str], m: int) -> list[list[tuple[str, float]]]:
    """Each row's ``m`` best ``(concept, score)`` pairs, descending (ties: lower concept index)."""
    import torch

    S = S.detach().float().cpu()
    m = min(m, S.shape[1])
    order = torch.sort(S, dim=1, descending=True, stable=True).indices[:, :m]
    vals = S.gather(1, order)
    return [
        [(names[j], float(v)) for j, v in zip(row, vrow, strict=True)]
        for row, vrow in zip(order.tolist(), vals.tolist(), strict=True)
    ]


def device_of(method: Any, evidence: Evidence) -> str:
    return evidence.device or getattr(method, "device", None) or "cpu"
