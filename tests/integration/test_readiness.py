"""Readiness needs the data, not only a server."""

from __future__ import annotations

import time

from testlib.postgres import Cluster, locked
from testlib.sample import JANUARY
from testlib.serve import make_client


def test_empty_database_is_not_ready(db_env: dict[str, str]) -> None:
    client = make_client(db_env)
    for path in (
        "/readyz",
        "/rates?date_from=2016-01-01&date_to=2016-01-02&orig_code=CNSGH&dest_code=NLRTM",
    ):
        r = client.get(path)
        assert (r.status_code, r.json) == (
            503,
            {"error": "unavailable", "message": "not seeded yet"},
        ), path


def test_seeded_database_is_ready(sample_client) -> None:
    r = sample_client.get("/readyz")
    assert (r.status_code, r.json) == (200, {"status": "ready"})


def test_statement_timeout_is_a_quick_503(sample_env: dict[str, str], pg: Cluster) -> None:
    """A query held up past RATES_STATEMENT_TIMEOUT_MS is cancelled and answered with 503."""
    client = make_client(sample_env, RATES_STATEMENT_TIMEOUT_MS="300")
    with locked(pg, sample_env["PGDATABASE"], "prices"):
        started = time.monotonic()
        r = client.get(JANUARY)
        took = time.monotonic() - started
    assert (r.status_code, r.json) == (
        503,
        {"error": "unavailable", "message": "timed out"},
    )
    assert took < 3, f"took {took:.1f} s for a 0.3 s statement timeout"
