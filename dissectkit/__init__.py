"""dissectkit: label the neurons of vision models with words, using vision-language dissectors.

Public API::

    import dissectkit as dk
    dk.list_components(kind=None)   # -> list[ComponentSpec] (spec.name, spec.kind, ...)
    dk.list_components(kind, names=True)  # -> list[str]
    dk.create(kind, name, **params) # -> component instance
    dk.load_recipe(path, overrides=())
    dk.run(recipe)                  # -> RunResult
    dk.KINDS
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

from dissectkit.base.params import Params
from dissectkit.base.types import Concept, LayerInfo, ProbeItem
from dissectkit.host.registry import KINDS, ComponentSpec

if TYPE_CHECKING:
    from dissectkit.base.context import BuildContext
    from dissectkit.engine import RunResult
    from dissectkit.host.recipe import Recipe

__version__ = "0.1.0"
__all__ = [
    "KINDS",
    "ComponentSpec",
    "Concept",
    "LayerInfo",
    "Params",
    "ProbeItem",
    "create",
    "list_components",
    "load_recipe",
    "run",
]


@overload
def list_components(kind: str | None = None, *, names: Literal[False] = False) -> list[ComponentSpec]: ...
@overload
def list_components(kind: str | None = None, *, names: Literal[True]) -> list[str]: ...


def list_components(kind: str | None = None, *, names: bool = False) -> list[ComponentSpec] | list[str]:
    """Every registered component (of one kind when given), sorted by kind then name: specs
    (``.name``, ``.kind``, ``.distribution``, ``.description``, ``.params``), or with
    ``names=True`` just their names (``"kind:name"`` when no kind is given)."""
    from dissectkit.host.manager import get_host

    specs = get_host().registry.list(kind)
    if not names:
        return specs
    return [s.name if kind is not None else f"{s.kind}:{s.name}" for s in specs]


def create(kind: str, name: str, _ctx: BuildContext | None = None, **params: Any) -> Any:
    """Build a component by kind and name; ``params`` are validated by its ``Params`` model."""
    from dissectkit.base.context import BuildContext
    from dissectkit.host.manager import get_host

    spec = get_host().registry.get(kind, name)
    validated = spec.validate(params)
    return spec.build(validated, _ctx or BuildContext())


def load_recipe(path: Any, overrides: Any = ()) -> Recipe:
    """Load, merge (``extends:``), override (``a.b=c``) and validate a recipe file."""
    from dissectkit.host.recipe import load_recipe as _load

    return _load(path, overrides)


def run(recipe: Any, **options: Any) -> RunResult:
    """Run a recipe (a ``Recipe`` or a path) and return its ``RunResult``."""
    from dissectkit.engine import run as _run

    if not hasattr(recipe, "model_dump"):
        recipe = load_recipe(recipe)
    return _run(recipe, **options)
