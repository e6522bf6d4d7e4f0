"""The plugin under test is registered in-process for each test module: the test session's host is
built from dissectkit's built-ins only (DISSECTKIT_BUILTINS_ONLY=1), whether or not this distribution
is installed. Module scope, so the module-scoped fixtures that create its components find them."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _dissectkit_medclip_registered():
    import dissectkit_medclip

    from dissectkit.base.errors import PluginError
    from dissectkit.host.manager import get_host

    host = get_host()
    known = {id(r) for r in host.records}
    record = host.add_plugin(dissectkit_medclip, name="medclip", distribution="dissectkit-medclip")
    if not record.ok:
        if id(record) not in known:
            host.remove_plugin(record)
        raise PluginError("Plugin 'medclip' failed to register:\n  - " + "\n  - ".join(record.errors))
    yield record
    if id(record) not in known:
        host.remove_plugin(record)
