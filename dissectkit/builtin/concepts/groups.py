"""The concept-set audit behind ``dissectkit concepts audit RECIPE`` (docs/methods.md, "Concept-set
audit"): duplicates after normalisation, concepts under several categories, near-duplicates by the
dissector's text embeddings, pairs the dissector cannot tell apart on the probe, concepts no probe image
is close to; ``audit.csv`` and a synonym-groups file a recipe reads (``concepts: {groups: FILE}``)."""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dissectkit.base.types import Concept

AUDIT_COLUMNS = ("check", "concept", "other", "value", "category", "other_category", "detail")
CHECKS = ("duplicate", "multi_category", "text_near_duplicate", "probe_indistinguishable", "no_close_image")


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalise(text: str) -> str:
    """The key under which two spellings are one concept: case, accents, whitespace, punctuation and
    a plural ``-s`` / ``-es`` / ``-ies`` left out."""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    words = re.sub(r"[^a-z0-9]+", " ", t).split()
    return " ".join(_singular(w) for w in words)


@dataclass
class Audit:
    """The audit's findings (rows of ``audit.csv``) and the synonym groups they make."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def of(self, check: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["check"] == check]


def _pairs_above(M: Any, threshold: float) -> list[tuple[int, int, float]]:
    """``(i, j, M[i, j])`` with ``i < j`` and ``M[i, j] > threshold`` of a symmetric matrix."""
    import torch

    i, j = torch.triu_indices(M.shape[0], M.shape[0], offset=1, device=M.device)
    v = M[i, j]
    keep = (v > threshold).nonzero().flatten()
    return [(int(i[k]), int(j[k]), float(v[k])) for k in keep]


def audit_concepts(
    concepts: Sequence[Concept],
    listings: Sequence[tuple[str, str | None, str | None]] | None = None,
    encode_texts: Callable[[list[str]], Any] | None = None,
    image_embeddings: Any = None,
    text_threshold: float = 0.95,
    probe_threshold: float = 0.98,
    top: int = 10,
) -> Audit:
    """Audit a concept set: ``listings`` are its raw ``(text, category, subcategory)`` entries with
    repeats (default: the concepts); ``encode_texts`` the dissector's text encoder (L2-normalised rows);
    ``image_embeddings [N, D]`` the dissector's embeddings of the probe images (``None``: no probe
    checks). Two concepts are text near-duplicates when their text embeddings, centred on the set's
    mean (a text encoder's embeddings share a large common direction), have a cosine above
    ``text_threshold``; probe-indistinguishable when the images' similarities to the two correlate
    above ``probe_threshold`` over the probe; a concept has no close image when it is among no image's
    ``top`` most similar concepts. Synonym groups join duplicates, and the pairs that are near-duplicates
    by both the text and the probe (by the text alone without a probe)."""
    import torch

    texts = [c.text for c in concepts]
    position = {t: i for i, t in enumerate(texts)}
    audit = Audit()
    listings = list(listings) if listings is not None else [(c.text, c.category, c.subcategory) for c in concepts]
    by_key: dict[str, list[tuple[str, str | None, str | None]]] = defaultdict(list)
    for entry in listings:
        by_key[normalise(entry[0])].append(entry)
    links: list[tuple[str, str]] = []
    text_pairs: set[tuple[str, str]] = set()
    for key, entries in by_key.items():
        spellings = list(dict.fromkeys(e[0] for e in entries))
        if len(entries) > 1:
            first = spellings[0]
            for other in spellings[1:] or [first]:
                audit.rows.append({"check": "duplicate", "concept": first, "other": other, "value": len(entries),
                                   "category": entries[0][1], "other_category": next(e[1] for e in entries if e[0] == other),
                                   "detail": f"{len(entries)} listings normalise to {key!r}: "
                                             + "; ".join(repr(s) for s in spellings)})
                if other != first:
                    links.append((first, other))
        cats = list(dict.fromkeys(e[1] for e in entries))
        if len(cats) > 1:
            audit.rows.append({"check": "multi_category", "concept": spellings[0], "other": "", "value": len(cats),
                               "category": cats[0], "other_category": "|".join(str(c) for c in cats[1:]),
                               "detail": "; ".join(f"{e[0]!r} under {e[1]} / {e[2]}" for e in entries)})
    T = None
    if encode_texts is not None and texts:
        T = torch.nn.functional.normalize(encode_texts(texts).float(), dim=1)
        Tc = torch.nn.functional.normalize(T - T.mean(0, keepdim=True), dim=1)
        for i, j, v in _pairs_above(Tc @ Tc.T, text_threshold):
            if normalise(texts[i]) == normalise(texts[j]):
                continue  # already a duplicate
            audit.rows.append({"check": "text_near_duplicate", "concept": texts[i], "other": texts[j], "value": round(v, 4),
                               "category": concepts[i].category, "other_category": concepts[j].category,
                               "detail": f"centred text-embedding cosine {v:.3f} > {text_threshold:g}"})
            text_pairs.add((texts[i], texts[j]))
    if T is not None and image_embeddings is not None and len(image_embeddings):
        S = image_embeddings.float().to(T.device) @ T.T  # [N, C]
        Z = S - S.mean(0, keepdim=True)
        Z = Z / Z.norm(dim=0, keepdim=True).clamp_min(1e-12)
        for i, j, v in _pairs_above(Z.T @ Z, probe_threshold):
            audit.rows.append({"check": "probe_indistinguishable", "concept": texts[i], "other": texts[j], "value": round(v, 4),
                               "category": concepts[i].category, "other_category": concepts[j].category,
                               "detail": f"image-similarity columns correlate {v:.3f} > {probe_threshold:g} over "
                                         f"{S.shape[0]} probe images"})
            if (texts[i], texts[j]) in text_pairs:
                links.append((texts[i], texts[j]))
        k = min(top, S.shape[1])
        hits = torch.zeros(S.shape[1], dtype=torch.long)
        hits.index_add_(0, S.topk(k, dim=1).indices.flatten().cpu(), torch.ones(S.shape[0] * k, dtype=torch.long))
        best = S.max(0).values
        for c in (hits == 0).nonzero().flatten().tolist():
            audit.rows.append({"check": "no_close_image", "concept": texts[c], "other": "", "value": round(float(best[c]), 4),
                               "category": concepts[c].category, "other_category": "",
                               "detail": f"among no probe image's {k} most similar concepts (best similarity {float(best[c]):.3f})"})
    else:
        links += sorted(text_pairs)
    audit.groups = _union(texts, [(a, b) for a, b in links if a in position and b in position], position)
    return audit


def _union(texts: list[str], links: list[tuple[str, str]], position: dict[str, int]) -> dict[str, list[str]]:
    """Connected groups of the linked concepts, each named by its first member in set order."""
    parent = {t: t for t in texts}

    def root(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb, key=position.__getitem__)] = min(ra, rb, key=position.__getitem__)
    groups: dict[str, list[str]] = defaultdict(list)
    for t in texts:
        groups[root(t)].append(t)
    return {name.strip(): members for name, members in groups.items() if len(members) > 1}


def write_audit(audit: Audit, out_dir: str | Path, source: str = "") -> tuple[Path, Path]:
    """``audit.csv`` and ``audit_groups.yaml`` (the groups file) in ``out_dir``."""
    from dissectkit.labelling.groups import write_groups

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "audit.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=AUDIT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in audit.rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in AUDIT_COLUMNS})
    groups = write_groups(out / "audit_groups.yaml", audit.groups,
                          note=f"from the audit of {source}" if source else "")
    return path, groups
