"""Each test's phase reports, kept on the item so that fixtures can tell a failed test.

The key lives here, not in conftest.py: test modules import conftest a second
time (`from conftest import ...` finds tests/ on sys.path, beside the copy pytest
loaded itself), and a key defined there would be two different keys.
testlib is imported once.
"""

from __future__ import annotations

import pytest

REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def failed(item: pytest.Item) -> bool:
    """Whether any phase of this test (setup, call, teardown so far) failed."""
    return any(r.failed for r in item.stash.get(REPORTS, {}).values())
