"""A 503 tells the client a stable reason and nothing of the inside; the log tells the operator.

Each case runs the real rates-serve over HTTP, as a client behind the load balancer
reaches it, and reads the raw bytes of the answer: the database's address, its port
and the driver's words must be in none of them, and must be in the service's log.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from testlib.data import seeded
from testlib.figures import figures
from testlib.postgres import Cluster, locked
from testlib.sample import JANUARY
from testlib.serve import Server

PATHS = ("/readyz", JANUARY)


def raw(url: str) -> tuple[int, str, bytes]:
    """Status, Content-Type and the body's bytes, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (loopback only)
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers["Content-Type"], e.read()


def answers(server: Server, reason: str) -> list[bytes]:
    """Every path answers exactly the reason in the API's error shape; the bodies."""
    bodies = []
    for path in PATHS:
        status, kind, body = raw(server.url + path)
        assert (status, kind) == (503, "application/json"), (path, body)
        assert body == b'{"error":"unavailable","message":"%s"}\n' % reason.encode(), path
        bodies.append(body)
    return bodies


def assert_hidden(bodies: list[bytes], *internal: str) -> None:
    for body in bodies:
        for text in internal:
            assert text.encode() not in body, (text, body)


def test_database_down(start_server, own_pg: Cluster) -> None:
    own_pg.create_database("rates")
    server = start_server(seeded(own_pg.env("rates")))
    own_pg.stop()
    bodies = answers(server, "database unavailable")
    where = f'server at "127.0.0.1", port {own_pg.port}'
    assert_hidden(bodies, "127.0.0.1", str(own_pg.port), "Connection refused", "server")
    log = server.log()
    assert f"503 database unavailable: cannot connect to the database ({where}): " in log, log
    assert "Connection refused" in log, log
    own_pg.start()


def test_not_seeded(start_server, db_env: dict[str, str]) -> None:
    server = start_server(db_env, ready="/healthz")
    bodies = answers(server, "not seeded yet")
    assert_hidden(bodies, "prices", "relation", "rates-seed")
    log = server.log()
    assert (
        "503 not seeded yet: the database holds no rates data yet: run rates-seed "
        '(relation "prices" does not exist)'
    ) in log, log


def test_statement_timeout(start_server, sample_env: dict[str, str], pg: Cluster) -> None:
    server = start_server({**sample_env, "RATES_STATEMENT_TIMEOUT_MS": "300"})
    with locked(pg, sample_env["PGDATABASE"], "prices"):
        status, _, body = raw(server.url + JANUARY)
    assert (status, body) == (503, b'{"error":"unavailable","message":"timed out"}\n')
    assert_hidden([body], "statement", "cancel", "300")
    log = server.log()
    assert "503 timed out: the query took longer than the statement timeout (300 ms): " in log
    assert "canceling statement due to statement timeout" in log, log


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port where the kernel accepts connections and nothing ever answers: a hung
    database host, as far as a client can tell."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_hung_database_is_a_503_within_the_connect_timeout(
    start_server, sample_env: dict[str, str], silent_server: int
) -> None:
    """libpq's own connect_timeout would wait 2 s at least; the pool's ends at 0.3 s."""
    env = {**sample_env, "PGHOST": "127.0.0.1", "PGPORT": str(silent_server)}
    server = start_server({**env, "RATES_CONNECT_TIMEOUT": "0.3"}, ready="/healthz")
    took = []
    for path in PATHS:
        started = time.monotonic()
        status, _, body = raw(server.url + path)
        took.append(time.monotonic() - started)
        assert (status, body) == (503, b'{"error":"unavailable","message":"timed out"}\n'), path
        assert_hidden([body], "127.0.0.1", str(silent_server))
    log = server.log()
    assert (
        f'503 timed out: no connection to the database (server at "127.0.0.1", '
        f"port {silent_server}) within 0.3 s"
    ) in log, log
    figures(
        "hung database: the API's 503",
        connect_timeout_s=0.3,
        readyz_ms=round(took[0] * 1000, 1),
        rates_ms=round(took[1] * 1000, 1),
    )
