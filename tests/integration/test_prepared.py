"""The /rates query is prepared once per pooled connection (rates/pool.py Statement), and
stays right across a PostgreSQL restart, a lost session, and new data loaded under it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from rates import sample, settings
from rates.app import RATES
from rates.pool import Database, DatabaseUnavailable
from testlib.data import run_seed, seeded
from testlib.postgres import Cluster

PARAMS = ("CNSGH", "NLRTM", dt.date(2016, 1, 1), dt.date(2016, 1, 31))
PLAIN = (
    "SELECT day, count(*), avg(price)::float8 FROM prices WHERE orig_code = %s "
    "AND dest_code = %s AND day BETWEEN %s AND %s GROUP BY day ORDER BY day"
)
PREPARED = "SELECT name FROM pg_prepared_statements ORDER BY name"


def _db(env: dict[str, str]) -> Database:
    # One connection, so that every query below runs in the same session.
    return Database(settings.load({**env, "RATES_POOL_SIZE": "1", "RATES_CONNECT_TIMEOUT": "2"}))


def test_prepared_once_per_connection(sample_env: dict[str, str]) -> None:
    db = _db(sample_env)
    try:
        assert db.query(PREPARED) == []
        rows = sorted(db.query(RATES, PARAMS))
        assert len(rows) == 31
        assert rows == db.query(PLAIN, PARAMS)
        assert db.query(PREPARED) == [("rates_daily",)]
        assert sorted(db.query(RATES, PARAMS)) == rows
        assert db.query(PREPARED) == [("rates_daily",)]
    finally:
        db.close()


def test_a_session_that_lost_its_statements_prepares_again(sample_env: dict[str, str]) -> None:
    db = _db(sample_env)
    try:
        rows = sorted(db.query(RATES, PARAMS))
        db.query("DEALLOCATE ALL; SELECT 1")
        assert db.query(PREPARED) == []
        assert sorted(db.query(RATES, PARAMS)) == rows
        assert db.query(PREPARED) == [("rates_daily",)]
    finally:
        db.close()


def test_prepared_again_after_a_postgres_restart(own_pg: Cluster) -> None:
    env = seeded(own_pg.env())
    db = _db(env)
    try:
        rows = sorted(db.query(RATES, PARAMS))
        backend = db.query("SELECT pg_backend_pid()")
        own_pg.restart()
        # The pooled connection died with the server: the query is retried on a new
        # connection, which prepares the statement again.
        assert sorted(db.query(RATES, PARAMS)) == rows
        assert db.query("SELECT pg_backend_pid()") != backend
        assert db.query(PREPARED) == [("rates_daily",)]
    finally:
        db.close()


def test_new_data_is_read_by_a_statement_prepared_before(own_pg: Cluster, tmp_path: Path) -> None:
    env = seeded(own_pg.env())
    db = _db(env)
    try:
        before = sorted(db.query(RATES, PARAMS))
        other = tmp_path / "other.sql"
        sample.main(["--seed", "5", "--output", str(other)])
        # rates-seed --replace drops and creates the tables: PostgreSQL plans the prepared
        # statement again on the new ones.
        result = run_seed({**env, "RATES_DUMP": str(other)}, "--replace")
        assert result.returncode == 0, result.stderr
        after = sorted(db.query(RATES, PARAMS))
        assert after == db.query(PLAIN, PARAMS)
        assert after != before
    finally:
        db.close()


def test_before_the_seed_it_is_unavailable(db_env: dict[str, str]) -> None:
    db = _db(db_env)
    try:
        with pytest.raises(DatabaseUnavailable) as err:
            db.query(RATES, PARAMS)
        assert err.value.reason == "not seeded yet"
        assert err.value.detail == (
            "the database holds no rates data yet: run rates-seed "
            '(relation "prices" does not exist)'
        )
        # The connection is still good, and once the data is there the statement is prepared.
        seeded(db_env)
        assert len(db.query(RATES, PARAMS)) == 31
    finally:
        db.close()
