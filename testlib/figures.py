"""The figures a test measured: printed for the log, and kept for the reliability report.

A test calls `figures("what was measured", requests=15765, failed=0, ...)`. The line is
printed (`pytest -s` shows it), and recorded with the test that printed it and the first
paragraph of its docstring, the promise it checks. When RATES_FIGURES_FILE names a file, every
test that passed is appended there, with its promise and figures, as JSON lines at the
end of the session, so that several runs (the unprivileged levels, then the root levels)
add to one file; `python -m testlib.reliability FILE` writes docs/reliability.md from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figures:
    test: str  # the pytest node id
    promise: str  # the first paragraph of the test's docstring, on one line
    name: str
    values: dict[str, object]


_current_test = ""
_promises: dict[str, str] = {}  # node id -> the first paragraph of its docstring
_recorded: list[Figures] = []


def figures(name: str, **values: object) -> None:
    """Print and record what this test measured."""
    print(f"\n[figures] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    _recorded.append(Figures(_current_test, _promises[_current_test], name, values))


def start_test(nodeid: str, doc: str | None) -> None:
    """conftest.py calls this as each test starts, so that figures know their test."""
    global _current_test  # one test runs at a time
    _current_test = nodeid
    _promises[nodeid] = " ".join((doc or "").strip().split("\n\n")[0].split())


def write(passed: set[str]) -> None:
    """Append to RATES_FIGURES_FILE, if it is set, every test that passed: its figures, or
    one record without any (its promise still counts)."""
    target = os.environ.get("RATES_FIGURES_FILE")
    if not target:
        return
    measured = {record.test for record in _recorded}
    records = [r for r in _recorded if r.test in passed] + [
        Figures(test, _promises.get(test, ""), "", {}) for test in sorted(passed - measured)
    ]
    with Path(target).open("a") as out:
        for record in records:
            out.write(json.dumps(asdict(record), default=str) + "\n")
