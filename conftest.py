"""The whole test session (tests/ and plugins/*/tests) builds its plugin host from dissectkit's
built-ins only, whatever else is installed in the environment: a user's (or the project's own)
installed plugins must not change what the suite sees. A test that needs a plugin registers it
itself (the ``dissectkit_plugin`` fixture, the ``with_plugin`` marker of tests/conftest.py, a
plugin's own tests/conftest.py); a test of entry-point discovery lifts the switch for its own
distributions (tests/conftest.py's ``plugin_site``, tests/plugin_env.py for a real install).

Set here, at import, before any host is built; subprocesses the tests start inherit it."""

from __future__ import annotations

import os
import sys

BUILTINS_ONLY_ENV = "DISSECTKIT_BUILTINS_ONLY"  # dissectkit.host.manager.BUILTINS_ONLY_ENV

os.environ[BUILTINS_ONLY_ENV] = "1"


def pytest_configure(config):
    manager = sys.modules.get("dissectkit.host.manager")
    if manager is not None:  # a plugin of pytest built the host before this file was read: rebuild it
        manager.get_host(reload=True)


def pytest_report_header(config):
    return f"dissectkit plugin host: built-ins only ({BUILTINS_ONLY_ENV}=1; tests register the plugins they need)"
