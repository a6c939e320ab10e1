"""process-compose.yaml as data: the ordering, probes and stops the local stack relies on.

tests/e2e runs the stack itself; this holds its configuration to the same
promises where process-compose is not installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load((ROOT / "process-compose.yaml").read_text())


def test_start_order_is_gated_on_readiness(stack: dict) -> None:
    p = stack["processes"]
    assert set(p) == {"about", "postgres-init", "postgres", "seed", "api"}
    # `about` checks the ports first, then prints the line the rest waits for.
    assert p["postgres-init"]["depends_on"] == {"about": {"condition": "process_log_ready"}}
    assert p["about"]["ready_log_line"] == "rates: starting:"
    assert '\necho "rates: starting: PostgreSQL on' in p["about"]["command"]
    assert p["postgres"]["depends_on"] == {
        "postgres-init": {"condition": "process_completed_successfully"}
    }
    assert p["seed"]["depends_on"] == {"postgres": {"condition": "process_healthy"}}
    assert p["api"]["depends_on"] == {"seed": {"condition": "process_completed_successfully"}}
    # Readiness is a real query, and the API's is its own /readyz.
    assert "SELECT 1" in p["postgres"]["readiness_probe"]["exec"]["command"]
    assert "/readyz" in p["api"]["readiness_probe"]["exec"]["command"]
    assert "/healthz" in p["api"]["liveness_probe"]["exec"]["command"]


def test_the_ui_shows_about_first(stack: dict) -> None:
    # process-compose's UI selects the first process by name when it starts
    # (src/tui/proc-table.go, selectFirstEnabledProcess): the one that says why
    # the stack stopped.
    assert sorted(stack["processes"])[0] == "about"


def test_every_step_reports_what_stops_the_stack(stack: dict) -> None:
    p = stack["processes"]
    assert 'fifo="$state/stop.fifo"' in p["about"]["command"]
    for name in ("postgres-init", "postgres", "seed", "api"):
        assert '1<>"$state/stop.fifo"' in p[name]["command"], name
    # Both ports are checked before anything starts, and again by their server.
    assert 'stop 1 "$(taken "$pg_port" 127.0.0.1 PGPORT)"' in p["about"]["command"]
    assert 'stop 1 "$(taken "$api_port" "$api_host" RATES_PORT)"' in p["about"]["command"]
    assert "set PGPORT to a free port" in p["postgres"]["command"]
    assert "set RATES_PORT to a free port" in p["api"]["command"]


def test_no_sleep_anywhere(stack: dict) -> None:
    text = (ROOT / "process-compose.yaml").read_text()
    assert "sleep" not in text


def test_postgres_is_loopback_only_and_stops_fast(stack: dict) -> None:
    pg = stack["processes"]["postgres"]
    assert "-c listen_addresses=127.0.0.1" in pg["command"]
    assert "-c unix_socket_directories= \\\n" in pg["command"]
    assert pg["shutdown"]["signal"] == 2  # SIGINT: PostgreSQL's fast shutdown
    assert "PGHOST=127.0.0.1" in stack["environment"]
    assert stack["ordered_shutdown"] is True


def test_failures_stop_the_stack_and_the_servers_restart(stack: dict) -> None:
    p = stack["processes"]
    # Only `about` ends the stack; the steps that fail report to it, and are not
    # restarted (a port taken ends its server with status 0 for that reason).
    assert p["about"]["availability"]["restart"] == "exit_on_failure"
    assert p["postgres-init"]["availability"]["restart"] == "no"
    assert p["seed"]["availability"]["restart"] == "no"
    assert p["postgres"]["availability"]["restart"] == "on_failure"
    assert p["api"]["availability"]["restart"] == "on_failure"
    assert p["api"]["shutdown"]["signal"] == 15  # gunicorn's graceful stop


def test_commands_exec_the_long_running_program(stack: dict) -> None:
    for name in stack["processes"]:
        assert stack["processes"][name]["command"].startswith("set -Eeuo pipefail\n"), name
    for name in ("postgres", "api"):
        assert "\nexec " in stack["processes"][name]["command"], name
    # The servers' messages also go to a file, read at their next start.
    assert (
        "2> >(trap '' INT TERM HUP && exec tee \"$err\" >&2)"
        in stack["processes"]["api"]["command"]
    )
    # The seed is not exec'ed: its last line is passed on to `about`.
    assert "\nrates-seed 2>&1 | tee " in stack["processes"]["seed"]["command"]


def test_no_bash_arrays(stack: dict) -> None:
    # process-compose substitutes ${...} in the whole file before it reads
    # disable_env_expansion, and fails on ${name[...]} and ${!name}.
    text = (ROOT / "process-compose.yaml").read_text()
    assert re.findall(r"\$\{!|\$\{\w+\[", text) == []


def test_bash_expands_the_variables(stack: dict) -> None:
    # ${VAR:-default} is bash; process-compose's own expansion would eat it.
    assert stack["disable_env_expansion"] is True
