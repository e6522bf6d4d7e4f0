"""Errors the user can act on. The CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DissectkitError(Exception):
    """Base class of every error whose message tells the user what is wrong and how to fix it."""

    exit_code = 2


class RecipeError(DissectkitError):
    """A recipe file cannot be read or does not validate."""


class ComponentError(DissectkitError):
    """A component name is unknown, or its parameters do not validate."""


class PluginError(DissectkitError):
    """A plugin failed to load or registered something invalid."""


class PluginComponentError(PluginError):
    """A plugin's component raised (its factory, or a member the engine called): the CLI names the
    plugin, its distribution and version (``dissectkit.host.blame``), writes the traceback to a log
    file and exits 1."""

    exit_code = 1

    def __init__(self, message: str, spec: object = None) -> None:
        super().__init__(message)
        self.spec = spec


class DataError(DissectkitError):
    """Probe data or concept files are missing, empty or malformed."""


class WeightsError(DissectkitError):
    """A weights file is missing, refused or does not match the architecture."""


class LayerError(DissectkitError):
    """A layer name or pattern does not exist in the target."""


class EvidenceError(DissectkitError):
    """Activations or embeddings cannot be labelled (NaN/inf, too few images, ...)."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix with the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""
