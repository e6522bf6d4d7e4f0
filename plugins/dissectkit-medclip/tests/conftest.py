"""The plugin under test is registered in-process for each test module: the test session's host is
built from dissectkit's built-ins only (DISSECTKIT_BUILTINS_ONLY=1), whether or not this distribution
is installed. Module scope, so the module-scoped fixtures that create its components find them."""

from __future__ import annotations

import pytest

from dissectkit.testing import registered


@pytest.fixture(scope="module", autouse=True)
def _dissectkit_medclip_registered():
    with registered("dissectkit_medclip", name="medclip", distribution="dissectkit-medclip") as record:
        yield record
