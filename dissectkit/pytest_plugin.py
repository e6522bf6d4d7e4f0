"""pytest plugin of dissectkit (entry point ``pytest11``): the ``dissectkit_plugin`` fixture.

It registers a plugin module (or object) with the process-wide host without installing it, and
removes it after the test (``dissectkit.testing.registered`` for each call)::

    def test_my_words(dissectkit_plugin):
        dissectkit_plugin("dissectkit_mywords.plugin")
        words = dk.create("concepts", "my-words")

A plugin that fails to register (a taken name, a broken hook) fails the test with every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest


@pytest.fixture
def dissectkit_plugin() -> Iterator[Callable[..., Any]]:
    """``register(module_or_name, name=None, distribution="in-process") -> PluginRecord``."""
    from dissectkit.testing import registered

    with ExitStack() as stack:

        def register(plugin: Any, name: str | None = None, distribution: str = "in-process") -> Any:
            return stack.enter_context(registered(plugin, name, distribution))

        yield register
