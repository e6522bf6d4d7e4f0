"""Throughput of the synth-mammo generator on one core (the spec asks for >= 200 images/s at 320 x 192).

Prints images/s of the generator as shipped (findings painted in local patches) and of a
straightforward baseline that paints every finding over the full frame, and their ratio.
Run: OMP_NUM_THREADS=1 python benchmarks/synthetic_generator.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dissectkit.synthetic import generator as gen  # noqa: E402


def rate(n: int = 400) -> float:
    g = gen.SynthMammoGenerator(seed=0)
    g.item(0)
    t = time.perf_counter()
    for i in range(n):
        g.item(i)
    return n / (time.perf_counter() - t)


def full_frame_patch(cx, cy, r, h, w):
    yy, xx = gen._grid(h, w)
    sl = (slice(0, h), slice(0, w))
    return sl, yy, xx


if __name__ == "__main__":
    fast = rate()
    original = gen._patch
    gen._patch = full_frame_patch
    try:
        slow = rate()
    finally:
        gen._patch = original
    print(f"synth-mammo 320x192: {fast:.0f} images/s (local patches), {slow:.0f} images/s (full-frame baseline), "
          f"ratio {fast / slow:.2f}x")
