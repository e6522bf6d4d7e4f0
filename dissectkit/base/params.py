"""The base of every component's parameter model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Params(BaseModel):
    """Base of every component's parameter model: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class NoParams(Params):
    """For components without parameters."""


def format_validation_error(exc: ValidationError, what: str) -> str:
    """A pydantic error as one line per field of ``what``, naming unknown and missing parameters."""
    lines = [f"Invalid {what}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter"
        elif err["type"] == "missing":
            msg = "required parameter is missing"
        lines.append(f"  - {loc}: {msg} (got {err.get('input')!r})" if err["type"] != "missing" else f"  - {loc}: {msg}")
    return "\n".join(lines)
