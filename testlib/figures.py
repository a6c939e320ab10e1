"""The figures a test measured: printed for the log, and kept for the reliability report.

A test calls `figures("what was measured", requests=15765, failed=0, ...)`. The line is
printed (`pytest -s` shows it), and recorded with the test that printed it. When
RATES_FIGURES_FILE names a file, each record is appended there as one JSON line at the
end of the session, so that several runs (the unprivileged levels, then the root levels)
add to one file, from which the reliability report is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figures:
    test: str  # the pytest node id
    name: str
    values: dict[str, object]


_current_test = ""
_recorded: list[Figures] = []


def figures(name: str, **values: object) -> None:
    """Print and record what this test measured."""
    print(f"\n[figures] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    _recorded.append(Figures(_current_test, name, values))


def start_test(nodeid: str) -> None:
    """conftest.py calls this as each test starts, so that figures know their test."""
    global _current_test
    _current_test = nodeid


def write(passed: set[str]) -> None:
    """Append the figures of the tests that passed to RATES_FIGURES_FILE, if it is set."""
    target = os.environ.get("RATES_FIGURES_FILE")
    if not target:
        return
    with Path(target).open("a") as out:
        for record in _recorded:
            if record.test in passed:
                out.write(json.dumps(asdict(record), default=str) + "\n")
