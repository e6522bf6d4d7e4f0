"""The ``synth-mammo`` probe: generated images with masks, labels and reports."""

from __future__ import annotations

import hashlib
import json

from dissectkit.synthetic.generator import SynthMammoGenerator
from dissectkit.types import ProbeItem

GENERATOR_VERSION = 1  # bump when the drawing code changes what (seed, index) produces


class SynthMammoProbe:
    """``n`` synthetic mammograms; item ``i`` depends only on (seed, i). ``has_masks`` is true."""

    has_masks = True

    def __init__(self, n: int = 1000, seed: int = 0, size: tuple[int, int] = (320, 192),
                 frequencies: dict[str, float] | None = None, label_noise: float = 0.05) -> None:
        self.n = int(n)
        self.generator = SynthMammoGenerator(seed=seed, size=size, frequencies=frequencies, label_noise=label_noise)
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> ProbeItem:
        if not -self.n <= index < self.n:
            raise IndexError(f"synth-mammo has {self.n} images; index {index} is out of range.")
        return self.generator.item(index % self.n)

    def ids(self) -> list[str]:
        """Every item's id, without drawing the images."""
        g = self.generator
        return [f"synth-{g.seed}-{i:06d}" for i in range(self.n)]

    def fingerprint(self) -> str:
        g = self.generator
        key = {"v": GENERATOR_VERSION, "n": self.n, "seed": g.seed, "size": [g.h, g.w],
               "freq": sorted(g.frequencies.items()), "noise": g.label_noise}
        return "synth-mammo:" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
