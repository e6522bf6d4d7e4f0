"""Before any work: every weights file a component's params name must be at hand.

Components may load their weights lazily (a target lists its layers from the architecture alone),
so a missing file would otherwise surface only once the run reaches that model. The engine calls
:func:`missing_weights` on each built component's validated params, so a run stops before work
naming every missing file and the command that fetches it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dissectkit.errors import WeightsError


def weight_refs(params: Any) -> list[tuple[str, Any]]:
    """``(field path, ref)`` of every weights reference (``PathRef | HubRef | UrlRef``) in a validated
    params model, nested models, lists and dicts included."""
    from dissectkit.weights import HubRef, PathRef, UrlRef

    found: list[tuple[str, Any]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, PathRef | HubRef | UrlRef):
            found.append((where, value))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{where}.{name}" if where else name)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{where}.{i}")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")

    walk(params, "")
    return found


def missing_weights(params: Any, ctx: Any) -> list[str]:
    """One message per weights reference of ``params`` that cannot be resolved (offline: not in the
    cache; each message names the file and the command that fetches it)."""
    from dissectkit.weights import resolve

    out = []
    for where, ref in weight_refs(params):
        try:
            resolve(ref, ctx, what=f"`{where}`")
        except WeightsError as exc:
            out.append(str(exc))
    return out
