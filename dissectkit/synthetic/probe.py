"""The ``synth-mammo`` probe: generated images with masks, labels and reports."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from dissectkit.base.contract import Probe
from dissectkit.base.types import ProbeItem
from dissectkit.imaging.files import unique_ids
from dissectkit.synthetic.generator import SynthMammoGenerator

GENERATOR_VERSION = 1  # bump when the drawing code changes what (seed, index) produces


def synth_id(seed: int, index: int) -> str:
    """The id of generator item ``index`` of ``seed`` (``synth-<seed>-<index:06d>``)."""
    return f"synth-{seed}-{index:06d}"


class SynthMammoProbe(Probe):
    """``n`` synthetic mammograms; item ``i`` depends only on (seed, i); every item has its masks.

    ``indices``: the generator items to serve, in this order (default ``range(n)``; ``n`` is then
    ignored) - e.g. the in-memory twin of a subset exported by ``dissectkit synth export``."""

    def __init__(self, n: int = 1000, seed: int = 0, size: tuple[int, int] = (320, 192),
                 frequencies: dict[str, float] | None = None, label_noise: float = 0.05,
                 indices: Sequence[int] | None = None) -> None:
        self.indices = None if indices is None else [int(i) for i in indices]
        self.n = len(self.indices) if self.indices is not None else int(n)
        self.generator = SynthMammoGenerator(seed=seed, size=size, frequencies=frequencies, label_noise=label_noise)
        self.skipped: list[tuple[str, str]] = []
        self._ids: list[str] | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> ProbeItem:
        if not -self.n <= index < self.n:
            raise IndexError(f"synth-mammo has {self.n} images; index {index} is out of range.")
        item = self.generator.item(self._index(index % self.n))
        item.id = self.ids()[index % self.n]
        return item

    def _index(self, position: int) -> int:
        return self.indices[position] if self.indices is not None else position

    def make_ids(self) -> list[str]:
        """Every item's id, computed now (repeated indices get ``~2``, ``~3``, ... like file probes)."""
        seed = self.generator.seed
        ids = [synth_id(seed, self._index(i)) for i in range(self.n)]
        return ids if self.indices is None else unique_ids(ids)

    def ids(self) -> list[str]:
        """Every item's id in order, without drawing the images; built once, shared (do not modify)."""
        if self._ids is None:
            self._ids = self.make_ids()
        return self._ids

    def fingerprint(self) -> str:
        g = self.generator
        key = {"v": GENERATOR_VERSION, "n": self.n, "seed": g.seed, "size": [g.h, g.w],
               "freq": sorted(g.frequencies.items()), "noise": g.label_noise}
        if self.indices is not None:
            key["indices"] = hashlib.sha256(json.dumps(self.indices).encode()).hexdigest()
        return "synth-mammo:" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
