"""Unit tests run modules in-process, as the target side would.

Importing any controller code (ansible.errors, a filter plugin, ...) flips ansible-core into
"controller" mode for the whole process, and from then on a module's warnings go to the display
instead of its result. Each test gets the module-side setting back so results do not depend on
which test files ran before.
"""

import pytest
from ansible.module_utils import _internal


@pytest.fixture(autouse=True)
def module_side(monkeypatch):
    monkeypatch.setattr(_internal, "is_controller", False)
