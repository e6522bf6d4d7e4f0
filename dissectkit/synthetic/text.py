"""A hashing tokenizer: words, word bigrams and character n-grams hashed (CRC-32, stable) into a fixed
number of buckets, so unknown words never fail (docs/synthetic.md, "Models")."""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


class HashTokenizer:
    """Text -> hashed feature ids (word, bigram and char n-gram features)."""

    def __init__(self, buckets: int = 8192, ngrams: tuple[int, ...] = (3, 4, 5)) -> None:
        if buckets < 16:
            raise ValueError(f"buckets must be at least 16, got {buckets}")
        self.buckets = int(buckets)
        self.ngrams = tuple(int(n) for n in ngrams)
        self._word_features = lru_cache(maxsize=65536)(self._word_features_uncached)

    def _hash(self, token: str) -> int:
        return zlib.crc32(token.encode("utf-8")) % self.buckets

    def _word_features_uncached(self, word: str) -> tuple[int, ...]:
        feats = [self._hash("w:" + word)]
        marked = f"<{word}>"
        for n in self.ngrams:
            feats.extend(self._hash(f"c{n}:" + marked[i : i + n]) for i in range(max(len(marked) - n + 1, 1)))
        return tuple(feats)

    def features(self, text: str) -> list[int]:
        words = _WORD.findall(str(text).lower())
        if not words:
            return [self._hash("<empty>")]
        feats: list[int] = []
        for w in words:
            feats.extend(self._word_features(w))
        feats.extend(self._hash(f"b:{a} {b}") for a, b in zip(words, words[1:], strict=False))
        return feats

    def batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Flat feature ids and per-text offsets, the input of ``torch.nn.EmbeddingBag``."""
        ids: list[int] = []
        offsets: list[int] = []
        for t in texts:
            offsets.append(len(ids))
            ids.extend(self.features(t))
        return np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
