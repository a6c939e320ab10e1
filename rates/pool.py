"""A small connection pool that survives a PostgreSQL restart.

psycopg2's own pools do not fit: they raise at once when exhausted instead
of waiting, close every connection above `minconn` when it is returned, and
never notice that a pooled connection died with the server. Here a request
waits (up to the connect timeout) for one of `RATES_POOL_SIZE` connections;
a query that fails because its connection broke is retried once on a fresh
one (every query the service runs is a read, so a retry is safe), and broken
connections are dropped. Connections are in autocommit mode, so none is ever
left `idle in transaction`.

A `Statement` is prepared on each connection the first time that connection
runs it (`PREPARE`), then run with `EXECUTE`: PostgreSQL parses and plans it
once per connection instead of on every request. A new connection (after a
PostgreSQL restart, say) prepares it again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.extensions

from rates.settings import Settings


class DatabaseUnavailable(Exception):
    """The database cannot answer now; the message is safe to show to clients."""


class Statement:
    """A query to prepare once per connection: `sql` numbers its parameters $1, $2, ..."""

    def __init__(self, name: str, sql: str, types: Sequence[str]) -> None:
        self.name = name
        self.prepare = f"PREPARE {name} ({', '.join(types)}) AS {sql}"
        self.execute = f"EXECUTE {name} ({', '.join(['%s'] * len(types))})"


class _Connection(psycopg2.extensions.connection):
    """A connection that knows which statements it has prepared."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()


class Database:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        # Connections are opened on first use, in the process that uses them:
        # nothing connects at import time, and no socket crosses a fork.
        self._idle: list[_Connection] = []
        # Bounds the connections open at once, idle or busy.
        self._slots = threading.BoundedSemaphore(settings.pool_size)

    def _take(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            conn = psycopg2.connect(
                "", connection_factory=_Connection, **self._settings.connect_kwargs()
            )
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(
                f"cannot connect to the database: {_first_line(exc)}"
            ) from exc
        conn.autocommit = True
        return conn

    def _give(self, conn: _Connection, broken: bool = False) -> None:
        if broken or conn.closed:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def query(
        self, sql: str | Statement, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return all its rows."""
        if not self._slots.acquire(timeout=self._settings.connect_timeout):
            raise DatabaseUnavailable("all database connections are busy")
        try:
            for attempt in (1, 2):
                conn = self._take()
                try:
                    with conn.cursor() as cur:
                        if isinstance(sql, Statement):
                            if sql.name not in conn.prepared:
                                cur.execute(sql.prepare)
                                conn.prepared.add(sql.name)
                            cur.execute(sql.execute, params)
                        else:
                            cur.execute(sql, params)
                        rows = cur.fetchall()
                except psycopg2.errors.UndefinedTable as exc:
                    self._give(conn)
                    raise DatabaseUnavailable(
                        "the database holds no rates data yet: run rates-seed"
                    ) from exc
                except psycopg2.errors.InvalidSqlStatementName:
                    # The session lost its prepared statements (DEALLOCATE, DISCARD ALL):
                    # prepare again, once.
                    conn.prepared.clear()
                    self._give(conn)
                    if attempt == 2:
                        raise
                    continue
                except psycopg2.errors.QueryCanceled as exc:
                    self._give(conn)
                    raise DatabaseUnavailable(
                        "the query took longer than the statement timeout"
                    ) from exc
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    # The connection broke (server restarted, network cut): drop it
                    # and try once more on a new one.
                    self._give(conn, broken=True)
                    if attempt == 2:
                        raise DatabaseUnavailable(f"database error: {_first_line(exc)}") from exc
                    continue
                except BaseException:
                    self._give(conn, broken=True)
                    raise
                self._give(conn)
                return rows
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
