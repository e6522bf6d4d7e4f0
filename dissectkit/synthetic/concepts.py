"""The ``synth-mammo-concepts`` set: ground-truth names, synonyms, BI-RADS terms and distractors."""

from __future__ import annotations

from dissectkit.base.types import Concept
from dissectkit.synthetic import vocab

# (category, subcategory) of each ground-truth concept, in the style of the mammo-birads set.
CATEGORY: dict[str, tuple[str, str]] = {
    "round mass": ("mass", "shape"),
    "oval mass": ("mass", "shape"),
    "irregular mass": ("mass", "shape"),
    "circumscribed margin": ("mass", "margin"),
    "spiculated margin": ("mass", "margin"),
    "fine pleomorphic calcifications": ("calcification", "suspicious morphology"),
    "linear branching calcifications": ("calcification", "suspicious morphology"),
    "coarse popcorn calcifications": ("calcification", "typically benign"),
    "vascular calcifications": ("calcification", "typically benign"),
    "architectural distortion": ("architectural distortion", "distortion"),
    "focal asymmetry": ("asymmetries", "asymmetry"),
    "skin thickening": ("associated features", "skin"),
    "nipple retraction": ("associated features", "nipple"),
    "intramammary lymph node": ("intramammary lymph node", "lymph node"),
    "surgical clip": ("other findings", "foreign body"),
    "breast implant": ("other findings", "foreign body"),
    **{c: ("breast composition", "density category") for c in vocab.COMPOSITIONS},
}

# Everyday words, the distractors of the Mammo-CLIP Dissect study's design (our own list).
DISTRACTORS = (
    "dog", "cat", "car", "bicycle", "tree", "house", "mountain", "river", "ocean", "beach",
    "pizza", "apple", "banana", "guitar", "piano", "football", "telephone", "computer", "chair", "table",
    "window", "door", "cloud", "sunset", "flower", "bird", "horse", "airplane", "train", "book",
    "clock", "shoe", "umbrella", "bridge", "road", "kitchen", "cup", "camera", "snow", "forest",
)


def synth_concepts(groups: list[str] | tuple[str, ...] = ("findings", "synonyms", "birads", "distractors")):
    """The concept list of the chosen groups, deduplicated by text in first-seen order."""
    from dissectkit.builtin.concepts import ConceptList

    out: list[Concept] = []
    if "findings" in groups:
        out += [Concept(c, *CATEGORY[c]) for c in vocab.CONCEPT_CLASSES]
    if "synonyms" in groups:
        out += [Concept(s, *CATEGORY[c]) for c in vocab.CONCEPT_CLASSES for s in vocab.SYNONYMS[c][1:]]
    if "birads" in groups:
        out += [c for c in _birads() if c.category != "distractor"]
    if "distractors" in groups:
        out += [Concept(w, "distractor", "everyday") for w in DISTRACTORS]
        out += [c for c in _birads() if c.category == "distractor"]
    unique: dict[str, Concept] = {}
    for c in out:
        unique.setdefault(c.text.lower(), c)
    return ConceptList(list(unique.values()), "builtin:synth-mammo-concepts")


def _birads() -> list[Concept]:
    """The ``mammo-birads`` set shipped with dissectkit."""
    from dissectkit.builtin.concepts.loaders import bundled

    return bundled("mammo_birads")
