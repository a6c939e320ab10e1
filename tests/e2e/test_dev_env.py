"""The dev shell meets the running stack: psql and rates-seed --replace through .envrc alone.

A developer's checkout is stood in for by a directory with the repository's
.envrc and a .env naming this stack's port and state directory (the test may
not take 5432 and .state); nothing else is set: no PG* variable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from testlib import ROOT
from testlib.sample import JANUARY
from testlib.serve import get, wait_until
from testlib.stack import Stack

if shutil.which("process-compose") is None:
    pytest.skip(
        "process-compose is not installed: use `nix develop`, or .ci/install-process-compose",
        allow_module_level=True,
    )


def in_dev_shell(checkout: Path, command: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`command` in bash after `source .envrc`, with no libpq variable of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "RATES_"))}
    return subprocess.run(
        ["bash", "-c", f"source ./.envrc && {command}"],
        cwd=checkout,
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_psql_and_seed_replace_reach_the_stack(tmp_path: Path) -> None:
    stack = Stack(Path(tempfile.mkdtemp(prefix="rates-e2e-")))
    try:
        stack.up()
        checkout = tmp_path / "checkout"
        checkout.mkdir()
        shutil.copy(ROOT / ".envrc", checkout / ".envrc")
        (checkout / ".env").write_text(f"PGPORT={stack.pg_port}\nRATES_STATE_DIR={stack.state}\n")

        count = "psql -X -tAc 'SELECT count(*) FROM prices'"
        psql = in_dev_shell(checkout, count)
        assert (psql.returncode, psql.stdout, psql.stderr) == (0, "57000\n", "")

        # Other data, loaded into the running stack: the API serves it
        # without a restart (rates-seed's NOTIFY drops the answer cache).
        before = get(stack.url + JANUARY)
        api_pid = stack.processes()["api"]["pid"]
        dump = tmp_path / "other.sql"
        sample = [sys.executable, "-m", "rates.sample", "--prices", "20000", "--seed", "7"]
        subprocess.run([*sample, "--output", str(dump)], check=True)
        seed = in_dev_shell(checkout, "rates-seed --replace", RATES_DUMP=str(dump))
        assert seed.returncode == 0, seed.stderr
        assert "rates-seed: loaded" in seed.stderr
        psql = in_dev_shell(checkout, count)
        assert (psql.returncode, psql.stdout) == (0, "20000\n")
        wait_until(lambda: get(stack.url + JANUARY) != before, "the API to serve the new data")
        assert stack.processes()["api"]["pid"] == api_pid

        # The password came from the stack's pgpass file, and appears nowhere.
        password = (stack.state / "pgpass").read_text().strip().rsplit(":", 1)[1]
        assert password not in psql.stdout + psql.stderr + seed.stdout + seed.stderr
        assert stack.down() == 0
        assert stack.leftovers() == []
    finally:
        stack.kill()
        shutil.rmtree(stack.base, ignore_errors=True)


class StackAsTheReadmeStartsIt(Stack):
    """`process-compose up` with no --config, in a shell that sourced .envrc (README)."""

    def command(self, tui: bool) -> list[str]:
        cmd = super().command(tui)
        at = cmd.index("--config")
        del cmd[at : at + 2]
        return ["bash", "-c", 'source ./.envrc && exec "$@"', "bash", *cmd]


def test_process_compose_up_finds_the_local_stack() -> None:
    """compose.yaml sits beside process-compose.yaml, and process-compose looks for it first."""
    stack = StackAsTheReadmeStartsIt(Path(tempfile.mkdtemp(prefix="rates-e2e-")))
    try:
        stack.up()
        assert set(stack.processes()) == {"about", "postgres-init", "postgres", "seed", "api"}
        assert stack.down() == 0
        assert stack.leftovers() == []
    finally:
        stack.kill()
        shutil.rmtree(stack.base, ignore_errors=True)
