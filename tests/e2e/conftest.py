"""The e2e recipe, shared: stacks on free ports with a state directory of their own,
stopped after the test, checked for leftovers and, when the test failed, shown."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testlib.data import REFERENCE_DUMP
from testlib.stack import Stack


@pytest.fixture
def make_stack(failed: Callable[[], bool]) -> Iterator[Callable[[], Stack]]:
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
        if failed():
            print(s.diagnostics())
        else:
            shutil.rmtree(s.base, ignore_errors=True)


@pytest.fixture
def stack(make_stack: Callable[[], Stack]) -> Stack:
    return make_stack()
