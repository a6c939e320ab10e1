"""process-compose.yaml as data: the ordering, probes and stops the local stack relies on.

tests/e2e runs the stack itself; this holds its configuration to the same
promises where process-compose is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load((ROOT / "process-compose.yaml").read_text())


def test_start_order_is_gated_on_readiness(stack: dict) -> None:
    p = stack["processes"]
    assert set(p) == {"postgres-init", "postgres", "seed", "api"}
    assert p["postgres"]["depends_on"] == {
        "postgres-init": {"condition": "process_completed_successfully"}
    }
    assert p["seed"]["depends_on"] == {"postgres": {"condition": "process_healthy"}}
    assert p["api"]["depends_on"] == {"seed": {"condition": "process_completed_successfully"}}
    # Readiness is a real query, and the API's is its own /readyz.
    assert "SELECT 1" in p["postgres"]["readiness_probe"]["exec"]["command"]
    assert "/readyz" in p["api"]["readiness_probe"]["exec"]["command"]
    assert "/healthz" in p["api"]["liveness_probe"]["exec"]["command"]


def test_no_sleep_anywhere(stack: dict) -> None:
    text = (ROOT / "process-compose.yaml").read_text()
    assert "sleep" not in text


def test_postgres_is_loopback_only_and_stops_fast(stack: dict) -> None:
    pg = stack["processes"]["postgres"]
    assert "-c listen_addresses=127.0.0.1" in pg["command"]
    assert "-c unix_socket_directories=\n" in pg["command"] + "\n"
    assert pg["shutdown"]["signal"] == 2  # SIGINT: PostgreSQL's fast shutdown
    assert "PGHOST=127.0.0.1" in stack["environment"]
    assert stack["ordered_shutdown"] is True


def test_failures_stop_the_stack_and_the_api_restarts(stack: dict) -> None:
    p = stack["processes"]
    assert p["postgres-init"]["availability"]["restart"] == "exit_on_failure"
    assert p["seed"]["availability"]["restart"] == "exit_on_failure"
    assert p["api"]["availability"]["restart"] == "on_failure"
    assert p["api"]["shutdown"]["signal"] == 15  # gunicorn's graceful stop


def test_commands_exec_the_long_running_program(stack: dict) -> None:
    for name in ("postgres", "seed", "api"):
        command = stack["processes"][name]["command"]
        assert command.startswith("set -Eeuo pipefail\n"), name
        assert "\nexec " in command, name


def test_bash_expands_the_variables(stack: dict) -> None:
    # ${VAR:-default} is bash; process-compose's own expansion would eat it.
    assert stack["disable_env_expansion"] is True
