"""rates-serve as a real process: configuration errors, HTTP, graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from testlib.postgres import Cluster, locked
from testlib.sample import JANUARY, JANUARY_BODY
from testlib.serve import Server, get, wait_until


@pytest.fixture
def server(sample_env: dict[str, str], tmp_path: Path):
    s = Server(sample_env, tmp_path / "serve.log")
    s.wait_ready()
    yield s
    s.stop()


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {},
            "rates-serve: PGDATABASE: required but not set; "
            "expected the name of the database that holds the rates data",
        ),
        (
            {"PGDATABASE": "r", "RATES_PORT": "99999"},
            "rates-serve: RATES_PORT: expected an integer from 1 to 65535, got '99999'",
        ),
        (
            {"PGDATABASE": "r", "RATES_WORKERS": "lots"},
            "rates-serve: RATES_WORKERS: expected an integer from 1 to 64, got 'lots'",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], line: str) -> None:
    result = subprocess.run(
        ["rates-serve"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")


def test_serves_the_sample_over_http(server: Server) -> None:
    assert get(server.url + "/") == (200, {"message": "Hello world!"})
    assert get(server.url + "/readyz") == (200, {"status": "ready"})
    assert get(server.url + JANUARY) == (200, JANUARY_BODY)


def test_no_connection_is_left_idle_in_transaction(
    server: Server, pg: Cluster, sample_env: dict[str, str]
) -> None:
    for _ in range(20):
        assert get(server.url + JANUARY)[0] == 200
    states = pg.psql(
        "SELECT coalesce(string_agg(state, ','), '') FROM pg_stat_activity "
        f"WHERE application_name = 'rates' AND datname = '{sample_env['PGDATABASE']}'"
    )
    assert states, "the service holds no connection: the pool is not pooling"
    assert set(states.split(",")) == {"idle"}, states


def test_sigterm_finishes_requests_in_flight(
    server: Server, pg: Cluster, sample_env: dict[str, str]
) -> None:
    """A request running when SIGTERM arrives still gets its answer; then exit 0."""
    db = sample_env["PGDATABASE"]

    def waiting() -> bool:
        return (
            pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rates' "
                f"AND datname = '{db}' AND wait_event_type = 'Lock'"
            )
            == "1"
        )

    answer: list[tuple[int, object]] = []
    request = threading.Thread(target=lambda: answer.append(get(server.url + "/readyz", 30)))
    # The readiness query waits for the lock, so a request is certainly in
    # flight when the signal arrives.
    with locked(pg, db, "regions"):
        request.start()
        wait_until(waiting, "the request to wait on the lock")
        server.proc.send_signal(signal.SIGTERM)
    request.join(timeout=30)
    assert answer == [(200, {"status": "ready"})]
    assert server.proc.wait(timeout=60) == 0, server.log()


def test_a_very_long_request_is_refused_before_the_app(server: Server) -> None:
    """gunicorn's request-line limit: a 5,000-character parameter never reaches Flask."""
    import urllib.error
    import urllib.request

    url = server.url + JANUARY + "&orig_code=" + "A" * 5000
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 (loopback only)
    refused.value.close()
    # 414 URI Too Long from gunicorn 24 on; 400 Bad Request before.
    assert refused.value.code in (400, 414)
    assert "rates.app" not in server.log()
