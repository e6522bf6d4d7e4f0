"""The component contract: one base class per kind, stating its required members and its optional
members with their defaults. ``docs/plugins.md`` documents every member; this module is the code.

A plugin subclasses the base class of its kind (the optional members then come with their
defaults). An object that does not is *adapted* once, when a run resolves its components
(:func:`adapt`): its own members are used, a missing optional member takes the base class's
default, a missing required member is a ``ComponentError`` naming it. The engine reads every
member directly afterwards; nothing else probes a component with ``getattr``.

``isinstance(obj, Probe)`` is true for a subclass and for any object that has the required members.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dissectkit.base.errors import ComponentError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from dissectkit.base.types import Concept, LayerInfo, ProbeItem
    from dissectkit.labelling.evidence import Evidence, LayerLabels
    from dissectkit.labelling.stability import ResampledLabels, ResampledScores, Resamples
    from dissectkit.labelling.streaming import ActivationStream
    from dissectkit.results.observe import PassObserver, PassPlan
    from dissectkit.results.run_result import RunResult

__all__ = [
    "BASES",
    "ComponentBase",
    "ConceptSet",
    "Dissector",
    "Method",
    "Probe",
    "Reporter",
    "Similarity",
    "Target",
    "adapt",
    "missing_members",
]


class _KindMeta(type):
    """``isinstance(obj, Base)``: a subclass, or any object with the kind's required members."""

    def __instancecheck__(cls, obj: object) -> bool:
        if super().__instancecheck__(obj):
            return True
        required: tuple[str, ...] | None = cls.__dict__.get("required")
        return required is not None and isinstance(cls, type) and not missing_members(cls, obj)  # type: ignore[arg-type]


class ComponentBase(metaclass=_KindMeta):
    """What every kind's base class declares: its kind, required members and optional members."""

    kind: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()
    """Members a component must have (checked by :func:`adapt`)."""
    optional: ClassVar[tuple[str, ...]] = ()
    """Members with a default on the base class (a component may override them)."""


# --------------------------------------------------------------------------- the seven kinds
class Dissector(ComponentBase):
    """A vision-language model: both encoders return L2-normalised rows in one space of ``embed_dim``."""

    kind = "dissector"
    required = ("embed_dim", "preprocess", "encode_images", "encode_texts", "fingerprint")
    optional = ("preprocess_key",)

    embed_dim: int
    """The size D of the shared embedding space."""

    def preprocess(self, image: Any) -> torch.Tensor:
        """One raw probe image (see ``docs/data.md``) -> ``Tensor[3, H, W]``; bad input raises ``DataError``."""
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``Tensor[B, 3, H, W]`` -> L2-normalised ``Tensor[B, D]``."""
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> L2-normalised ``Tensor[n, D]`` (``[0, D]`` for no text)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes when the weights or the preprocessing change (a cache key)."""
        raise NotImplementedError

    def preprocess_key(self) -> str | None:
        """Names what ``preprocess`` computes: components (dissectors and targets) returning the same
        string preprocess each image the same way, so the pass computes their input once and gives
        them one tensor. ``None`` (the default): not shared."""
        return None


class Target(ComponentBase):
    """The model whose neurons are labelled."""

    kind = "target"
    required = ("module", "preprocess", "layers", "fingerprint")
    optional = ("ground_truth", "preprocess_mask", "preprocess_key")

    module: nn.Module
    """The network, in eval mode, on the build context's device."""

    def preprocess(self, image: Any) -> torch.Tensor:
        """One raw probe image -> the model's input tensor (without the batch dimension)."""
        raise NotImplementedError

    def layers(self) -> list[LayerInfo]:
        """Every layer that may be dissected, known without running an image."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes when the weights, the architecture or the preprocessing change."""
        raise NotImplementedError

    def preprocess_key(self) -> str | None:
        """As :meth:`Dissector.preprocess_key`: components returning the same string share one input tensor
        per image; ``None`` (the default): not shared."""
        return None

    def ground_truth(self, layer: str) -> list[str | None] | None:
        """The true concept of each neuron of ``layer`` when known (the run then measures accuracy);
        ``None`` (the default): unknown."""
        return None

    preprocess_mask: Callable[[Any], Any] | None = None
    """Puts an ``H x W`` concept mask through the same resize / crop as ``preprocess`` (``None``,
    the default: masks are used as they are)."""


class Probe(ComponentBase):
    """The probe images, read lazily. Whether items carry masks is declared at registration
    (``has_masks=``), not on the object."""

    kind = "probe"
    required = ("__len__", "__getitem__", "fingerprint")
    optional = ("ids", "skipped")

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> ProbeItem:
        """Item ``index`` (``IndexError`` past the end); an unreadable file raises ``DataError``."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Changes with the files and their order."""
        raise NotImplementedError

    def ids(self) -> list[str]:
        """Every item's unique id in order (``ids()[i] == probe[i].id``), built once: the engine
        calls it once per run. Default: the indices."""
        return [str(i) for i in range(len(self))]

    skipped: list[tuple[str, str]] = []  # noqa: RUF012 - read-only default
    """``(id, reason)`` of the files the probe left out (e.g. listed but missing); the run records them."""


class ConceptSet(ComponentBase):
    """The candidate labels."""

    kind = "concepts"
    required = ("concepts",)

    concepts: list[Concept]
    """The concepts, in order (``Concept(text, category, subcategory)``); an attribute or a property."""


class Similarity(ComponentBase):
    """``sim(P[N, C], A) -> Tensor[K, C]``, higher = better. ``A`` is an ``ActivationStream``: the
    activations of the N valid probe images as row blocks (``A.blocks()``), never held whole unless
    the similarity asks for it (``A.materialise()``, ``O(N K)`` memory)."""

    kind = "similarity"
    required = ("__call__",)
    optional = ("from_embeddings", "resampled_scores")

    def __call__(self, P: torch.Tensor, A: ActivationStream) -> torch.Tensor:
        raise NotImplementedError

    def from_embeddings(self, images: torch.Tensor, texts: torch.Tensor, A: ActivationStream) -> torch.Tensor:
        """Scores from image ``[N, D]`` and text ``[C, D]`` embeddings. Default: ``self(images @ texts.T, A)``;
        override it to avoid forming ``P`` at once."""
        return self(images @ texts.T, A)

    def resampled_scores(
        self, images: torch.Tensor, texts: torch.Tensor, A: ActivationStream, resamples: Resamples
    ) -> ResampledScores | None:
        """Each neuron's ``resamples.candidates`` best concepts on the full probe and their scores in
        every bootstrap resample of the probe (``resamples``: per-row multiplicity counts, all
        resamples in the same passes over ``A``), for label stability. Default ``None``: resampling
        is not defined for this similarity (its labels get no stability)."""
        return None


class Method(ComponentBase):
    """A labelling strategy: ``label(evidence) -> LayerLabels`` for one layer."""

    kind = "method"
    required = ("name", "label")
    optional = ("needs_masks", "uses_dissector", "label_resampled")

    name: str
    """The method's name (written into ``LayerLabels.method``)."""

    def label(self, evidence: Evidence) -> LayerLabels:
        raise NotImplementedError

    needs_masks: bool = False
    """It reads ``evidence.spatial_maps`` and needs a probe registered with masks; a recipe pairing
    it with a probe without masks is refused before any work."""
    uses_dissector: bool = True
    """Its labels depend on the dissector's embeddings; ``False``: it runs once per (target, layer)
    and its labels are shared by every dissector."""

    def label_resampled(self, evidence: Evidence, labels: LayerLabels, resamples: Resamples) -> ResampledLabels | None:
        """Each resample's top-1 concept and the score of the full-probe label (``labels``, what
        :meth:`label` returned on ``evidence``) in it, for the bootstrap resamples of the evidence
        rows that ``resamples`` gives as per-row multiplicity counts (label stability,
        docs/methods.md). Default ``None``: resampling is not defined for this method."""
        return None


class Reporter(ComponentBase):
    """Writes files about a finished run into ``out_dir`` (the run directory being built)."""

    kind = "reporter"
    required = ("write",)
    optional = ("pass_observer", "pages")

    def write(self, run_result: RunResult, out_dir: Path) -> Any:
        raise NotImplementedError

    def pass_observer(self, plan: PassPlan) -> PassObserver | None:
        """An observer of the run's single pass (asked on the main process only): what it keeps is in
        ``run_result.evidence.observations[label]``. ``None`` (the default): nothing to watch."""
        return None

    def pages(self, run_result: RunResult) -> dict[str, str]:
        """Title -> path (relative to the run directory) of the pages it writes that other reporters
        may link to; collected into ``run_result.pages`` before any reporter writes. Default: none."""
        return {}


BASES: dict[str, type[ComponentBase]] = {
    base.kind: base for base in (Dissector, Target, Probe, ConceptSet, Similarity, Method, Reporter)
}
"""The base class of each kind, by kind."""


# --------------------------------------------------------------------------- adapting
def _implemented(base: type[ComponentBase], obj: object, name: str) -> bool:
    stub = base.__dict__.get(name)
    if name.startswith("__"):  # special methods are looked up on the type
        own = getattr(type(obj), name, None)
        return own is not None and own is not stub
    try:
        found = inspect.getattr_static(obj, name)
    except AttributeError:
        return hasattr(obj, name)  # provided dynamically (``__getattr__``)
    return stub is None or found is not stub


def missing_members(base: type[ComponentBase], obj: object) -> list[str]:
    """The required members of ``base``'s kind that ``obj`` lacks (inherited stubs count as missing)."""
    return [name for name in base.required if not _implemented(base, obj, name)]


class _Delegated:
    """A member of an adapted object: the component's own, else the base class's default."""

    def __init__(self, name: str, base: type[ComponentBase]) -> None:
        self.name, self.base = name, base

    def __get__(self, inst: Any, owner: type) -> Any:
        if inst is None:
            return self
        try:
            return getattr(inst.component, self.name)
        except AttributeError:
            default = self.base.__dict__[self.name]
            return default.__get__(inst, owner) if hasattr(default, "__get__") else default


class Adapted:
    """A component that does not subclass its kind's base class, with the base's defaults filled in.
    ``component`` is the object itself; its other attributes are reached through the adapter."""

    component: Any

    def __init__(self, component: Any) -> None:
        object.__setattr__(self, "component", component)

    def __getattr__(self, name: str) -> Any:
        if name == "component":
            raise AttributeError(name)
        return getattr(self.component, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.component, name, value)

    def __repr__(self) -> str:
        return f"adapted({self.component!r})"


def _special(name: str) -> Callable[..., Any]:
    def call(self: Adapted, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.component, name)(*args, **kwargs)

    call.__name__ = name
    return call


_ADAPTERS: dict[str, type] = {}


def _adapter(base: type[ComponentBase]) -> type:
    if base.kind not in _ADAPTERS:
        members: dict[str, Any] = {}
        for name in base.required + base.optional:
            members[name] = _special(name) if name.startswith("__") else _Delegated(name, base)
        _ADAPTERS[base.kind] = type(f"Adapted{base.__name__}", (Adapted, base), members)
    return _ADAPTERS[base.kind]


def adapt(kind: str, component: Any, where: str = "") -> Any:
    """The component as its kind's base class: itself when it subclasses it, else an adapter that
    fills the optional members' defaults. A missing required member is a ``ComponentError``."""
    base = BASES[kind]
    missing = missing_members(base, component)
    if missing:
        who = where or f"{kind} {type(component).__name__}"
        raise ComponentError(
            f"The {who} lacks the required member(s) {', '.join(missing)} of a {kind} "
            f"(docs/plugins.md, 'The seven kinds'). Subclass dissectkit.plugin.{base.__name__} and define them."
        )
    if type.__instancecheck__(base, component):
        return component
    return _adapter(base)(component)
