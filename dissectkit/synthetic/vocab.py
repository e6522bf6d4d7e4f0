"""The vocabulary of the synthetic mammography world: findings, compositions, synonyms, templates."""

from __future__ import annotations

# Canonical concept text of every finding (the key of its mask and label), in output-neuron order.
FINDINGS: tuple[str, ...] = (
    "round mass",
    "oval mass",
    "irregular mass",
    "circumscribed margin",
    "spiculated margin",
    "fine pleomorphic calcifications",
    "coarse popcorn calcifications",
    "linear branching calcifications",
    "vascular calcifications",
    "architectural distortion",
    "focal asymmetry",
    "skin thickening",
    "nipple retraction",
    "intramammary lymph node",
    "surgical clip",
    "breast implant",
)

# BI-RADS breast composition A-D.
COMPOSITIONS: tuple[str, ...] = (
    "almost entirely fatty",
    "scattered fibroglandular density",
    "heterogeneously dense",
    "extremely dense",
)
COMPOSITION_LETTERS = "ABCD"

# Everything an output neuron of ``synth-effnet-concepts`` stands for, in neuron order.
CONCEPT_CLASSES: tuple[str, ...] = FINDINGS + COMPOSITIONS

MASS_SHAPES = ("round mass", "oval mass", "irregular mass")
MASS_MARGINS = ("circumscribed margin", "spiculated margin")

# Independent findings with their default frequency (a mass draws one shape and one margin).
DEFAULT_FREQUENCIES: dict[str, float] = {
    "mass": 0.4,
    "fine pleomorphic calcifications": 0.2,
    "coarse popcorn calcifications": 0.2,
    "linear branching calcifications": 0.2,
    "vascular calcifications": 0.2,
    "architectural distortion": 0.18,
    "focal asymmetry": 0.18,
    "skin thickening": 0.18,
    "nipple retraction": 0.15,
    "intramammary lymph node": 0.18,
    "surgical clip": 0.15,
    "breast implant": 0.12,
}

# Findings that make an image malignant (before label noise).
MALIGNANT_FINDINGS = (
    "irregular mass",
    "spiculated margin",
    "fine pleomorphic calcifications",
    "linear branching calcifications",
    "architectural distortion",
)

# Report wording: the canonical text comes first; reports use it 70% of the time.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "round mass": ("round mass", "rounded mass", "circular mass"),
    "oval mass": ("oval mass", "ovoid mass", "elliptical mass"),
    "irregular mass": ("irregular mass", "irregularly shaped mass", "lobulated irregular mass"),
    "circumscribed margin": ("circumscribed margin", "well circumscribed margins", "sharply defined margins"),
    "spiculated margin": ("spiculated margin", "spiculated margins", "stellate margins"),
    "fine pleomorphic calcifications": (
        "fine pleomorphic calcifications",
        "pleomorphic microcalcifications",
        "clustered fine pleomorphic calcifications",
    ),
    "coarse popcorn calcifications": (
        "coarse popcorn calcifications",
        "popcorn-like calcifications",
        "coarse degenerating calcifications",
    ),
    "linear branching calcifications": (
        "linear branching calcifications",
        "fine linear branching calcifications",
        "casting calcifications",
    ),
    "vascular calcifications": ("vascular calcifications", "arterial calcifications", "tram-track vascular calcifications"),
    "architectural distortion": ("architectural distortion", "parenchymal distortion", "distortion of the architecture"),
    "focal asymmetry": ("focal asymmetry", "focal asymmetric density", "asymmetric focal density"),
    "skin thickening": ("skin thickening", "thickened skin", "cutaneous thickening"),
    "nipple retraction": ("nipple retraction", "retracted nipple", "nipple inversion"),
    "intramammary lymph node": ("intramammary lymph node", "intramammary node", "benign intramammary lymph node"),
    "surgical clip": ("surgical clip", "metallic surgical clip", "biopsy marker clip"),
    "breast implant": ("breast implant", "silicone breast implant", "retroglandular implant"),
    "almost entirely fatty": ("almost entirely fatty", "predominantly fatty", "fatty replaced"),
    "scattered fibroglandular density": (
        "scattered fibroglandular density",
        "scattered areas of fibroglandular density",
        "scattered fibroglandular tissue",
    ),
    "heterogeneously dense": ("heterogeneously dense", "heterogeneously dense tissue", "heterogeneous dense parenchyma"),
    "extremely dense": ("extremely dense", "extremely dense tissue", "very dense parenchyma"),
}

FINDING_TEMPLATES = (
    "There {be} {a} {f} in the {loc}.",
    "{A} {f} {be} seen in the {loc}.",
    "{F} noted in the {loc}.",
    "The {side} breast shows {a} {f}.",
    "{F} in the {loc}.",
    "Findings include {a} {f} located in the {loc}.",
    "We see {a} {f} at the {loc}.",
)
MASS_TEMPLATES = (
    "There is {a} {shape} with {margin} in the {loc}.",
    "{A} {shape} with {margin} is seen in the {loc}.",
    "{Shape} with {margin}, {loc}.",
    "The {side} breast shows {a} {shape} with {margin}.",
)
COMPOSITION_TEMPLATES = (
    "The breasts are {c}.",
    "Breast composition: {c}.",
    "The breast tissue is {c}.",
    "{C} breast parenchyma.",
)
NORMAL_SENTENCES = (
    "No suspicious abnormality.",
    "No significant abnormality is seen.",
    "Otherwise unremarkable study.",
)
VIEW_SENTENCES = ("{side} {view} view.", "{View} projection of the {side} breast.")


def article(phrase: str) -> str:
    """``a`` or ``an`` for a noun phrase (nothing for plurals)."""
    if phrase.endswith("s") and not phrase.endswith("ss"):
        return ""
    return "an" if phrase[:1] in "aeiou" else "a"
