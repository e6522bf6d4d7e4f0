"""Similarity functions vs the published per-neuron-loop structure, in one process.

Case 1 (CPU): N=10,000 images, K=2,048 neurons, C=5,000 concepts, float32. For every function, the
published structure (one neuron at a time for wpmi, soft_wpmi, rank_reorder, with the softmax over
the whole P computed once as the reference code does; cos and cos3 are matrix products there) and dissectkit's implementation are timed alternately (best of --repeat) and
their extra resident memory sampled by a polling thread; then the ratio and the max abs difference.
rank_reorder sorts K x C columns of N/20 values in both forms; it runs on the first
--rank-neurons neurons (it has no coupling between neurons). When CUDA is available the
functions are also timed on the GPU against the CPU loop.

Case 2 (in a subprocess, peak RSS from ru_maxrss): N=50,000, K=2,048, C=20,000 with random
embeddings; P is formed block by block from I and T (``from_embeddings``), never whole.

    python benchmarks/similarity.py            # both cases, full size
    python benchmarks/similarity.py --quick    # small sizes, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time

import torch

import dissectkit as dk
from dissectkit.base.context import BuildContext
from dissectkit.builtin.similarities import top_indices

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __enter__(self):
        self.base = rss()
        self.peak = self.base
        self.stop = False
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        return self

    def _poll(self):
        while not self.stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


# ---------------------------------------------------------------------------------------------
# the published structures, float32: one neuron at a time for wpmi, soft_wpmi and rank_reorder
# (cos and cos3 are published in matrix form, which is the baseline for them)
def loop_cos(P, A):
    """The published code is already in matrix form: normalise columns, one matmul."""
    Pn = P / P.norm(dim=0, keepdim=True)
    An = A / A.norm(dim=0, keepdim=True)
    return An.T @ Pn


def loop_cos3(P, A):
    """Published matrix form: centre, cube, normalise columns, one matmul."""
    Pc = (P - P.mean(0, keepdim=True)) ** 3
    Ac = (A - A.mean(0, keepdim=True)) ** 3
    Pc = Pc / Pc.norm(dim=0, keepdim=True).clamp_min(1e-3)
    Ac = Ac / Ac.norm(dim=0, keepdim=True).clamp_min(1e-3)
    return Ac.T @ Pc


def _topk_idx(A, k):
    """``[k, K]`` top-k image indices. torch.topk orders equal activations arbitrarily, and a swap of
    two tied ranks changes soft_wpmi's memberships; the loops use dissectkit's deterministic top-k
    (ties by lower image index) so both sides score the same images in the same order."""
    return top_indices(A, k).T


def loop_wpmi(P, A, top_k=28, a=2.0, lam=0.6, eps=1e-7):
    Q = torch.softmax(a * P, dim=1)
    idx = _topk_idx(A, top_k)
    L = torch.empty(A.shape[1], P.shape[1], dtype=P.dtype)
    for k in range(A.shape[1]):
        L[k] = torch.sum(torch.log(Q[idx[:, k]] + eps), dim=0)
    prior = torch.logsumexp(L, dim=0) - math.log(A.shape[1])
    return L - lam * prior


def loop_soft_wpmi(P, A, top_k=100, a=10.0, lam=1.0, eps=1e-7, p_start=0.998, p_end=0.97):
    Q = torch.softmax(a * P, dim=1)
    idx = _topk_idx(A, top_k)
    p = (p_start - (torch.arange(top_k, dtype=P.dtype) / top_k) * (p_start - p_end)).unsqueeze(1)
    L = torch.empty(A.shape[1], P.shape[1], dtype=P.dtype)
    for k in range(A.shape[1]):
        L[k] = torch.sum(torch.log(1 + p * (Q[idx[:, k]] - 1) + eps), dim=0)
    prior = torch.logsumexp(L, dim=0) - math.log(A.shape[1])
    return L - lam * prior


def loop_rank_reorder(P, A, p=3.0, top_fraction=0.05, scale_p=0.5, n_perm=5, seed=0):
    n = math.floor(A.shape[0] * top_fraction)
    idx = _topk_idx(A, n)
    vals = A.gather(0, idx)
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n, generator=gen) for _ in range(n_perm)]
    S = torch.empty(A.shape[1], P.shape[1])
    for k in range(A.shape[1]):
        a = vals[:, k]
        asc = a.flip(0)
        base = torch.stack([(asc - asc[pm]).abs().pow(p).mean() for pm in perms]).mean()
        Pg = P[idx[:, k]]
        ranks = torch.argsort(torch.argsort(Pg, dim=0, stable=True), dim=0, stable=True)
        reorg = asc[ranks]
        err = (a.unsqueeze(1) - reorg).abs().pow(p).mean(0) / Pg.mean(0).pow(scale_p)
        S[k] = -err / base
    return S


LOOPS = {
    "cos": loop_cos,
    "cos3": loop_cos3,
    "wpmi": loop_wpmi,
    "soft_wpmi": loop_soft_wpmi,
    "rank_reorder": loop_rank_reorder,
}


def _timed(fn, repeat):
    best, out, mem = math.inf, None, 0.0
    for _ in range(repeat):
        with PeakRSS() as m:
            t = time.perf_counter()
            out = fn()
            if out.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        mem = max(mem, m.mb)
        del out
    return best, fn(), mem


def case1(N, K, C, D, repeat, rank_neurons, only, f64=True):
    torch.manual_seed(0)
    I = torch.nn.functional.normalize(torch.randn(N, D), dim=1)  # noqa: E741
    T = torch.nn.functional.normalize(torch.randn(C, D), dim=1)
    P = (I @ T.T).contiguous()
    A = torch.randn(N, K).relu_() + 0.05 * torch.rand(N, K)
    print(f"case 1: N={N} K={K} C={C} float32, CPU threads={torch.get_num_threads()}")
    print(
        f"{'function':<13} {'K':>5} {'loop s':>8} {'dk s':>8} {'speed-up':>9} {'loop MB':>8} {'dk MB':>8} {'max|diff|':>10} {'max|ref|':>9}"
    )
    cuda = torch.cuda.is_available()
    for name, loop in LOOPS.items():
        if only and name not in only:
            continue
        Pn = P + 1.0 if name == "rank_reorder" else P  # rank_reorder needs positive mean cosines
        An = A[:, :rank_neurons] if name == "rank_reorder" else A
        sim = dk.create("similarity", name, _ctx=BuildContext(device="cpu"))
        tl, R, ml = _timed(lambda loop=loop, Pn=Pn, An=An: loop(Pn, An), repeat)
        tv, S, mv = _timed(lambda sim=sim, Pn=Pn, An=An: sim(Pn, An), repeat)
        diff = float((S - R).abs().max())
        print(
            f"{name:<13} {An.shape[1]:>5} {tl:>8.3f} {tv:>8.3f} {tl / tv:>8.2f}x {ml:>8.0f} {mv:>8.0f} "
            f"{diff:>10.2e} {float(R.abs().max()):>9.2e}"
        )
        if f64 and name in ("wpmi", "soft_wpmi"):
            # the float32 loop carries its own rounding (|L| ~ top_k * 6, S = L - prior is small):
            # both against the same loop run in float64 (untimed)
            R64 = loop(Pn.double(), An.double())
            print(
                f"{'  vs float64':<13} max|loop32 - loop64| = {float((R.double() - R64).abs().max()):.2e}   "
                f"max|dk - loop64| = {float((S.double() - R64).abs().max()):.2e}   "
                f"max|loop64| = {float(R64.abs().max()):.2e}"
            )
            del R64
        if cuda:
            gsim = dk.create("similarity", name, _ctx=BuildContext(device="cuda"))
            Pg, Ag = Pn.cuda(), An.cuda()
            gsim(Pg, Ag)  # warm-up
            tg, G, _ = _timed(lambda gsim=gsim, Pg=Pg, Ag=Ag: gsim(Pg, Ag), repeat)
            gdiff = float((G.cpu() - R).abs().max())
            print(
                f"{'  on cuda':<13} {An.shape[1]:>5} {tl:>8.3f} {tg:>8.3f} {tl / tg:>8.2f}x {'':>8} {'':>8} {gdiff:>10.2e}"
            )
        del R, S


def case2_child(N, K, C, D, names, device):
    torch.manual_seed(0)
    I = torch.nn.functional.normalize(torch.randn(N, D), dim=1)  # noqa: E741
    T = torch.nn.functional.normalize(torch.randn(C, D), dim=1)
    A = torch.randn(N, K).relu_()
    inputs_mb = (I.numel() + T.numel() + A.numel()) * 4 / 2**20
    out = {"inputs_mb": inputs_mb, "runs": {}}
    for name in names:
        sim = dk.create("similarity", name, _ctx=BuildContext(device=device))
        t = time.perf_counter()
        S = sim.from_embeddings(I, T, A)
        if S.is_cuda:
            torch.cuda.synchronize()
        out["runs"][name] = {"seconds": time.perf_counter() - t, "finite": bool(torch.isfinite(S).all())}
        del S
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def case2(N, K, C, D, names, device="cpu"):
    cmd = [sys.executable, __file__, "--child", json.dumps([N, K, C, D, names, device])]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(res.stderr)
        raise SystemExit(res.returncode)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    full_gb = 2 * N * C * 4 / 2**30
    print(
        f"\ncase 2 ({device}): N={N} K={K} C={C} D={D}, P formed on the fly (P and its softmax whole would be "
        f"{full_gb:.1f} GB); inputs I, T, A = {out['inputs_mb']:.0f} MB"
    )
    for name, r in out["runs"].items():
        print(f"  {name:<13} {r['seconds']:>8.1f} s   finite={r['finite']}")
    print(f"  peak RSS of the whole process (ru_maxrss): {out['peak_rss_mb']:.0f} MB")
    if "peak_cuda_mb" in out:
        print(f"  peak CUDA memory: {out['peak_cuda_mb']:.0f} MB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--case", choices=["1", "2", "all"], default="all")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="function names to run in case 1")
    ap.add_argument("--case2-functions", nargs="*", default=["soft_wpmi"], help="e.g. soft_wpmi wpmi cos cos3")
    ap.add_argument("--no-f64", action="store_true", help="skip the float64 accuracy check of case 1")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        case2_child(*json.loads(args.child))
        return
    if args.quick:
        c1, c2, rank_neurons = (2000, 256, 1000, 64), (5000, 256, 2000, 64), 32
    else:
        c1, c2, rank_neurons = (10_000, 2048, 5000, 512), (50_000, 2048, 20_000, 512), 64
    if args.case in ("1", "all"):
        case1(*c1, args.repeat, rank_neurons, args.only, not args.no_f64)
    if args.case in ("2", "all"):
        case2(*c2, args.case2_functions)
        if torch.cuda.is_available():
            case2(*c2, args.case2_functions, device="cuda")


if __name__ == "__main__":
    main()
