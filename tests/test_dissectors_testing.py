"""check_dissector catches each kind of contract violation (on a small linear toy dissector)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dissectkit.imaging.raw import to_unit_float
from dissectkit.testing import check_dissector


class Linear:
    """Pixels (grey, 8x8 average pooled) and character counts through fixed random projections."""

    embed_dim = 6

    def __init__(self, normalise=True, batch_dependent=False, raw_errors=False, shape_by_input=False):
        g = torch.Generator().manual_seed(0)
        self.w_img = torch.randn(3 * 64, 6, generator=g)
        self.w_txt = torch.randn(26, 6, generator=g)
        self.normalise, self.batch_dependent = normalise, batch_dependent
        self.raw_errors, self.shape_by_input = raw_errors, shape_by_input

    def preprocess(self, image):
        if self.raw_errors and isinstance(image, str):
            raise ValueError("bad")
        arr = to_unit_float(image)
        arr = np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr
        x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()
        size = (8, 8) if not (self.shape_by_input and arr.shape[0] % 2) else (9, 9)
        return torch.nn.functional.adaptive_avg_pool2d(x, size) if size == (8, 8) else torch.zeros(3, 9, 9)

    def _out(self, e):
        return torch.nn.functional.normalize(e, dim=-1) if self.normalise else e

    def encode_images(self, images):
        e = images.flatten(1) @ self.w_img
        if self.batch_dependent:
            e = e - e.mean(0, keepdim=True) * 0.5
        return self._out(e)

    def encode_texts(self, texts):
        counts = torch.tensor([[t.count(chr(97 + i)) for i in range(26)] for t in texts], dtype=torch.float32)
        return self._out(counts.reshape(len(texts), 26) @ self.w_txt)

    def fingerprint(self):
        return "linear-toy"


def test_a_conforming_dissector_passes():
    report = check_dissector(Linear())
    assert report["batch_vs_single_images"] < 1e-5


@pytest.mark.parametrize("broken, message", [
    (dict(normalise=False), "not unit norm"),
    (dict(batch_dependent=True), "a batch differs from its items"),
    (dict(raw_errors=True), "not DataError"),
    (dict(shape_by_input=True), "shape depends on the input form"),
])
def test_violations_are_reported(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_dissector(Linear(**broken), images=[np.zeros((9, 9), np.uint8) + i for i in range(3)] + [np.zeros((8, 8), np.uint8)]
                        if broken.get("shape_by_input") else None)
