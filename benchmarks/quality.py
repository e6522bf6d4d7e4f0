"""Label quality (``dissectkit.labelling.quality.layer_quality``) vs a per-neuron loop over the same formulas
(numpy ranks, one Spearman per neuron and concept), in the same process, and their largest
difference.

    .venv/bin/python benchmarks/quality.py [--n 2000] [--k 256] [--c 400] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def loop_quality(A: np.ndarray, P: np.ndarray, labels: list[int], top_fraction: float = 0.05) -> dict[str, list]:
    """The baseline: every neuron, every concept, one correlation at a time."""
    N, K = A.shape
    rp = [_ranks(P[:, c]) for c in range(P.shape[1])]
    n1 = min(max(1, math.ceil(top_fraction * N)), N - 1)
    out: dict[str, list] = {"sim_corr": [], "top_auc": [], "sim_z": []}
    for k in range(K):
        ra = _ranks(A[:, k])
        corrs = np.array([np.corrcoef(ra, r)[0, 1] for r in rp])
        c = labels[k]
        top = np.argsort(-A[:, k], kind="stable")[:n1]
        out["sim_corr"].append(corrs[c])
        out["top_auc"].append((rp[c][top].sum() - n1 * (n1 + 1) / 2) / (n1 * (N - n1)))
        out["sim_z"].append((corrs[c] - corrs.mean()) / corrs.std())
    return out


def main() -> None:
    import torch

    from dissectkit.labelling.quality import layer_quality

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--c", type=int, default=400)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    V = torch.nn.functional.normalize(torch.randn(args.n, args.d, generator=g), dim=1)
    T = torch.nn.functional.normalize(torch.randn(args.c, args.d, generator=g), dim=1)
    A = torch.relu(torch.randn(args.n, args.k, generator=g))
    labels = torch.randint(0, args.c, (args.k,), generator=g).tolist()
    t0 = time.perf_counter()
    fast = layer_quality(A, V, T, labels, device=args.device)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = loop_quality(A.numpy().astype(np.float64), (V @ T.T).numpy().astype(np.float64), labels)
    t_loop = time.perf_counter() - t0
    diff = max(abs(a - b) for col in slow for a, b in zip(fast[col], slow[col], strict=True))
    print(f"N={args.n} K={args.k} C={args.c} device={args.device}")
    print(f"vectorised {t_fast:.3f} s   loop {t_loop:.3f} s   speed-up x{t_loop / t_fast:.1f}   "
          f"max abs diff {diff:.2e}")


if __name__ == "__main__":
    main()
