"""Conformance checks for third-party components: ``check_dissector(dissector)``.

Use it in a plugin's tests::

    from dissectkit.testing import check_dissector
    check_dissector(dk.create("dissector", "my-clip", ...))

Each failed check raises ``AssertionError`` naming the property that does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dissectkit.errors import DataError

DEFAULT_TEXTS = ("mass", "a spiculated mass in the upper outer quadrant", "calcification", "normal breast tissue")


def sample_images(height: int = 48, width: int = 40, seed: int = 0) -> list[Any]:
    """Raw images of every accepted form: PIL L / RGB / I;16, HxW / HxWx1 / HxWx3 arrays of uint8,
    uint16 and float (grayscale and RGB)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    gray8 = rng.integers(0, 256, (height, width), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    return [
        Image.fromarray(gray8, mode="L"),
        Image.fromarray(rgb8, mode="RGB"),
        Image.fromarray(gray16),  # mode I;16
        gray8,
        gray8[:, :, None],
        rgb8,
        gray16,
        np.repeat(gray16[:, :, None], 3, axis=2),
        rng.random((height, width), dtype=np.float32),
        (rng.random((height, width, 3)) * 1000.0).astype(np.float64),
    ]


def invalid_images() -> list[Any]:
    """Inputs a dissector's ``preprocess`` must refuse with ``DataError``."""
    return [
        "not an image",
        np.zeros((4, 5, 6, 3), dtype=np.uint8),
        np.zeros((8, 8, 2), dtype=np.uint8),
        np.zeros((8, 8), dtype=np.complex64),
        np.full((8, 8), np.nan, dtype=np.float32),
        None,
    ]


def write_wordpiece_tokenizer(root, words: str):
    """A tiny BERT WordPiece tokenizer directory (special tokens + ``words``) for offline tests of
    BERT-based dissectors; returns ``(root, vocab_size)``."""
    from pathlib import Path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words.split()]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (root / "tokenizer_config.json").write_text('{"do_lower_case": true, "tokenizer_class": "BertTokenizer"}')
    return root, len(vocab)


def _close(a, b, atol: float) -> float:
    return float((a.float() - b.float()).abs().max())


def check_dissector(
    dissector: Any,
    texts: Sequence[str] = DEFAULT_TEXTS,
    images: Sequence[Any] | None = None,
    atol: float = 1e-5,
) -> dict[str, Any]:
    """Check the dissector contract; returns a few measured numbers (max deviations) for logging."""
    import torch

    from dissectkit.components import Dissector

    assert isinstance(dissector, Dissector), "dissector lacks embed_dim / preprocess / encode_* / fingerprint"
    assert isinstance(dissector.embed_dim, int) and dissector.embed_dim > 0, "embed_dim must be a positive int"
    module = getattr(dissector, "model", None)
    if module is not None and hasattr(module, "modules"):
        training = [type(m).__name__ for m in module.modules() if getattr(m, "training", False)]
        assert not training, f"dissector.model is not in eval mode ({', '.join(sorted(set(training))[:5])} in training mode)"
    fp = dissector.fingerprint()
    assert isinstance(fp, str) and fp, "fingerprint() must return a non-empty string"
    assert fp == dissector.fingerprint(), "fingerprint() is not stable"

    # preprocess: every accepted form gives one same-shaped finite float tensor [3, H, W]
    images = list(images) if images is not None else sample_images()
    tensors = []
    for i, image in enumerate(images):
        kind = type(image).__name__ + (f" {image.shape} {image.dtype}" if isinstance(image, np.ndarray) else "")
        try:
            x = dissector.preprocess(image)
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"preprocess refused accepted input #{i} ({kind}): {exc}") from exc
        assert isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3, (
            f"preprocess(#{i}: {kind}) must return Tensor[3, H, W], got {getattr(x, 'shape', type(x))}"
        )
        assert torch.isfinite(x).all(), f"preprocess(#{i}: {kind}) produced NaN/inf"
        tensors.append(x)
    shapes = {tuple(t.shape) for t in tensors}
    assert len(shapes) == 1, f"preprocess output shape depends on the input form: {sorted(shapes)}"
    for bad in invalid_images():
        try:
            dissector.preprocess(bad)
        except DataError as exc:
            assert str(exc), "DataError without a message"
            continue
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(
                f"preprocess raised {type(exc).__name__} (not DataError) for invalid input {type(bad).__name__}: {exc}"
            ) from exc
        raise AssertionError(f"preprocess accepted invalid input {type(bad).__name__} {getattr(bad, 'shape', '')}")

    batch = torch.stack(tensors[:4])
    emb = dissector.encode_images(batch)
    txt = dissector.encode_texts(list(texts))
    for what, e, n in (("encode_images", emb, len(batch)), ("encode_texts", txt, len(texts))):
        assert tuple(e.shape) == (n, dissector.embed_dim), f"{what} gave {tuple(e.shape)}, expected ({n}, {dissector.embed_dim})"
        assert torch.isfinite(e).all(), f"{what} produced NaN/inf"
        norms = e.float().norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4), f"{what} rows are not unit norm: {norms.tolist()}"
    again_img = dissector.encode_images(batch)
    again_txt = dissector.encode_texts(list(texts))
    det = max(_close(emb, again_img, atol), _close(txt, again_txt, atol))
    assert det <= atol, f"encoding is not deterministic in eval mode (max difference {det:.2e})"

    single_img = torch.cat([dissector.encode_images(batch[i : i + 1]) for i in range(len(batch))])
    single_txt = torch.cat([dissector.encode_texts([t]) for t in texts])
    dev_img, dev_txt = _close(emb, single_img, atol), _close(txt, single_txt, atol)
    assert dev_img <= atol, f"encode_images: a batch differs from its items encoded one by one ({dev_img:.2e} > {atol})"
    assert dev_txt <= atol, f"encode_texts: a batch differs from its items encoded one by one ({dev_txt:.2e} > {atol})"
    empty = dissector.encode_texts([])
    assert tuple(empty.shape) == (0, dissector.embed_dim), "encode_texts([]) must return an empty [0, D] tensor"
    return {"batch_vs_single_images": dev_img, "batch_vs_single_texts": dev_txt, "determinism": det}
