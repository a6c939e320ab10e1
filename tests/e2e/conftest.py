"""The e2e recipe, shared: stacks on free ports with a state directory of their own,
stopped after the test, checked for leftovers and, when the test failed, shown."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REFERENCE_DUMP
from testlib.stack import Stack

# Set on a test's item when a phase of it failed. Kept here, not read through
# `from conftest import failed`: that import makes a second copy of
# tests/conftest.py (pytest loads it as tests.conftest), whose key the hook
# there never writes.
_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def make_stack(request: pytest.FixtureRequest) -> Iterator[Callable[[], Stack]]:
    """Stacks of the test's own; each stopped, checked for leftovers and, on failure, shown.

    They load the reference dump when there is one (RATES_DUMP in `stack.env`).
    """
    stacks: list[Stack] = []

    def make() -> Stack:
        # A short base directory: PostgreSQL and process-compose put sockets there.
        base = Path(tempfile.mkdtemp(prefix="rates-e2e-"))
        stacks.append(Stack(base, REFERENCE_DUMP if REFERENCE_DUMP.is_file() else None))
        return stacks[-1]

    yield make
    for s in stacks:
        s.kill()
        if request.node.stash.get(_FAILED, False):
            print(s.diagnostics())
        else:
            shutil.rmtree(s.base, ignore_errors=True)


@pytest.fixture
def stack(make_stack: Callable[[], Stack]) -> Stack:
    return make_stack()
