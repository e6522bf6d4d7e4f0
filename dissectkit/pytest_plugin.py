"""pytest plugin of dissectkit (entry point ``pytest11``): the ``dissectkit_plugin`` fixture.

It registers a plugin module (or object) with the process-wide host without installing it, and
removes it after the test::

    def test_my_words(dissectkit_plugin):
        dissectkit_plugin("dissectkit_mywords.plugin")
        words = dk.create("concepts", "my-words")

A plugin that fails to register (a taken name, a broken hook) fails the test with every problem.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def dissectkit_plugin() -> Iterator[Callable[..., Any]]:
    """``register(module_or_name, name=None, distribution="in-process") -> PluginRecord``."""
    from dissectkit.base.errors import PluginError
    from dissectkit.host.manager import get_host

    host = get_host()
    added = []

    def register(plugin: Any, name: str | None = None, distribution: str = "in-process"):
        if isinstance(plugin, str):
            plugin = importlib.import_module(plugin)
        known = {id(r) for r in host.records}
        record = host.add_plugin(plugin, name=name, distribution=distribution)
        if id(record) not in known:  # an installed plugin stays as it is
            added.append(record)
        if not record.ok:
            raise PluginError(f"Plugin '{record.name}' failed to register:\n  - " + "\n  - ".join(record.errors))
        return record

    yield register
    for record in reversed(added):
        host.remove_plugin(record)
