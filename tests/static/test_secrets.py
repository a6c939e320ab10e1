"""No secret in git: detect-secrets scans every tracked file.

A false positive (a digest, an alphabet) is marked where it stands with
`# pragma: allowlist secret` and a word on what it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def scan(repo: Path) -> dict[str, list[dict]]:
    if shutil.which("detect-secrets") is None:
        pytest.skip("detect-secrets is not installed: pip install -e '.[test]'")
    out = subprocess.run(
        ["detect-secrets", "scan"], cwd=repo, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)["results"]


def test_no_secret_in_tracked_files() -> None:
    assert scan(ROOT) == {}


def test_the_scanner_finds_a_planted_secret(tmp_path: Path) -> None:
    """Proves the scan above can fail: the same command finds keys in a repository."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "settings.py").write_text(
        'aws_access_key_id = "AKIA' + 'IOSFODNN7EXAMPLE"\n'
        'db_password = "' + "hunter2-correct-horse" + '"\n'
    )
    subprocess.run(["git", "add", "settings.py"], cwd=tmp_path, check=True)
    found = scan(tmp_path)
    assert sorted(f["type"] for f in found["settings.py"]) == ["AWS Access Key", "Secret Keyword"]
