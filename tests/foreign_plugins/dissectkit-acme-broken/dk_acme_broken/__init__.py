"""A third party's plugin whose import fails: it needs a module that is not installed."""

from __future__ import annotations

import acme_module_that_is_not_installed  # noqa: F401

from dissectkit.plugin import hookimpl


@hookimpl
def dissectkit_register_concept_sets(register):  # never reached
    raise AssertionError("unreachable")
