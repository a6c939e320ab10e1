"""A small connection pool that survives a PostgreSQL restart.

psycopg2's ThreadedConnectionPool hands out connections but never checks
them: after the server restarts, every pooled connection is dead. Here a
query that fails because its connection broke is retried once on a fresh
connection (every query the service runs is a read, so a retry is safe), and
broken connections are closed instead of returned. Connections are in
autocommit mode, so none is ever left `idle in transaction`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.pool

from rates.settings import Settings


class DatabaseUnavailable(Exception):
    """The database cannot answer now; the message is safe to show to clients."""


class Database:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        # ThreadedConnectionPool raises at once when exhausted; callers wait
        # here instead, for at most the connect timeout.
        self._slots = threading.BoundedSemaphore(settings.pool_size)

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        # Created on first use, in the process that uses it: nothing connects
        # at import time, and gunicorn workers never share a socket.
        with self._lock:
            if self._pool is None:
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    0, self._settings.pool_size, "", **self._settings.connect_kwargs()
                )
            return self._pool

    def _connect(self, pool: psycopg2.pool.ThreadedConnectionPool) -> Any:
        try:
            conn = pool.getconn()
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(
                f"cannot connect to the database: {_first_line(exc)}"
            ) from exc
        conn.autocommit = True
        return conn

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return all its rows."""
        if not self._slots.acquire(timeout=self._settings.connect_timeout):
            raise DatabaseUnavailable("all database connections are busy")
        try:
            pool = self._get_pool()
            for attempt in (1, 2):
                conn = self._connect(pool)
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql, params)
                        rows = cur.fetchall()
                except psycopg2.errors.QueryCanceled as exc:
                    pool.putconn(conn)
                    raise DatabaseUnavailable(
                        "the query took longer than the statement timeout"
                    ) from exc
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    # The connection broke (server restarted, network cut): drop it.
                    pool.putconn(conn, close=True)
                    if attempt == 2:
                        raise DatabaseUnavailable(f"database error: {_first_line(exc)}") from exc
                    continue
                except BaseException:
                    pool.putconn(conn, close=bool(conn.closed))
                    raise
                pool.putconn(conn)
                return rows
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
