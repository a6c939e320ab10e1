"""The data the tests load: the reference dump beside the clone, the contract, the seed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from testlib import ROOT

# The reference dump and the original service's answers, beside the clone;
# never copied into the project.
SHARED = Path(os.environ.get("RATES_SHARED_DATA", ROOT.parent / "shared" / "data"))
REFERENCE_DUMP = SHARED / "rates.sql"
CONTRACT = SHARED / "contract_cases.json"


def needs_reference_dump() -> None:
    if not REFERENCE_DUMP.is_file():
        pytest.skip(
            f"the reference dump is not at {REFERENCE_DUMP} (only CI and the project's "
            "own machines have ../shared/data; set RATES_SHARED_DATA to point elsewhere)"
        )


def contract_cases() -> list[dict[str, Any]]:
    needs_reference_dump()
    return json.loads(CONTRACT.read_text())


def run_seed(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real rates-seed command with exactly this environment (plus PATH)."""
    return subprocess.run(
        ["rates-seed", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def seeded(env: dict[str, str], dump: Path | None = None) -> dict[str, str]:
    env = {**env, **({"RATES_DUMP": str(dump)} if dump else {})}
    result = run_seed(env)
    assert result.returncode == 0, result.stderr
    return env
