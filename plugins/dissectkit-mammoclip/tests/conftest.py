"""The plugin under test is registered in-process for each test module: the test session's host is
built from dissectkit's built-ins only (DISSECTKIT_BUILTINS_ONLY=1), whether or not this distribution
is installed. Module scope, so the module-scoped fixtures that create its components find them."""

from __future__ import annotations

import pytest

from dissectkit.testing import registered


@pytest.fixture(scope="module", autouse=True)
def _dissectkit_mammoclip_registered():
    with registered("dissectkit_mammoclip", name="mammoclip", distribution="dissectkit-mammoclip") as record:
        yield record
