"""Readiness needs the data, not only a server."""

from __future__ import annotations

import subprocess
import time

from conftest import make_client
from testlib.postgres import Cluster
from testlib.serve import wait_until


def test_empty_database_is_not_ready(db_env: dict[str, str]) -> None:
    client = make_client(db_env)
    for path in (
        "/readyz",
        "/rates?date_from=2016-01-01&date_to=2016-01-02&orig_code=CNSGH&dest_code=NLRTM",
    ):
        r = client.get(path)
        assert (r.status_code, r.json) == (
            503,
            {
                "error": "unavailable",
                "message": "the database holds no rates data yet: run rates-seed",
            },
        ), path


def test_seeded_database_is_ready(sample_client) -> None:  # type: ignore[no-untyped-def]
    r = sample_client.get("/readyz")
    assert (r.status_code, r.json) == (200, {"status": "ready"})


def test_statement_timeout_is_a_quick_503(sample_env: dict[str, str], pg: Cluster) -> None:
    """A query held up past RATES_STATEMENT_TIMEOUT_MS is cancelled and answered with 503."""
    db = sample_env["PGDATABASE"]
    locker = subprocess.Popen(
        [
            "psql",
            "-X",
            "-q",
            "-h",
            str(pg.socket_dir),
            "-p",
            str(pg.port),
            "-U",
            "postgres",
            "-d",
            db,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert locker.stdin is not None
    try:
        locker.stdin.write("BEGIN; LOCK TABLE prices IN ACCESS EXCLUSIVE MODE;\n")
        locker.stdin.flush()
        wait_until(
            lambda: (
                pg.psql(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON "
                    "c.oid = l.relation WHERE c.relname = 'prices' "
                    "AND l.mode = 'AccessExclusiveLock'",
                    db,
                )
                == "1"
            ),
            "the lock on prices",
        )
        client = make_client(sample_env, RATES_STATEMENT_TIMEOUT_MS="300")
        started = time.monotonic()
        r = client.get(
            "/rates?date_from=2016-01-01&date_to=2016-01-02&orig_code=CNSGH&dest_code=NLRTM"
        )
        took = time.monotonic() - started
    finally:
        locker.stdin.write("ROLLBACK;\n")
        locker.stdin.close()
        locker.wait(timeout=30)
    assert (r.status_code, r.json) == (
        503,
        {"error": "unavailable", "message": "the query took longer than the statement timeout"},
    )
    assert took < 3, f"took {took:.1f} s for a 0.3 s statement timeout"
