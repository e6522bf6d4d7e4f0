"""pytest plugin of dissectkit (entry point ``pytest11``): the ``dissectkit_plugin`` fixture, which
registers a plugin in-process for one test (docs/plugins.md, "Testing a plugin")."""

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
