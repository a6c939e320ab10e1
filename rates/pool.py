"""A small connection pool that survives a PostgreSQL restart.

psycopg2's own pools do not fit: they raise at once when exhausted instead
of waiting, close every connection above `minconn` when it is returned, and
never notice that a pooled connection died with the server. Here a request
waits (up to the connect timeout) for one of `RATES_POOL_SIZE` connections;
a query that fails because its connection broke is retried once on a fresh
one (every query the service runs is a read, so a retry is safe), and broken
connections are dropped. Connections are in autocommit mode, so none is ever
left `idle in transaction`.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg2
import psycopg2.extensions

from rates.settings import Settings


class DatabaseUnavailable(Exception):
    """The database cannot answer now; the message is safe to show to clients."""


class Database:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        # Connections are opened on first use, in the process that uses them:
        # nothing connects at import time, and no socket crosses a fork.
        self._idle: list[psycopg2.extensions.connection] = []
        # Bounds the connections open at once, idle or busy.
        self._slots = threading.BoundedSemaphore(settings.pool_size)

    def _take(self) -> psycopg2.extensions.connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            conn = psycopg2.connect("", **self._settings.connect_kwargs())
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(
                f"cannot connect to the database: {_first_line(exc)}"
            ) from exc
        conn.autocommit = True
        return conn

    def _give(self, conn: psycopg2.extensions.connection, broken: bool = False) -> None:
        if broken or conn.closed:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return all its rows."""
        if not self._slots.acquire(timeout=self._settings.connect_timeout):
            raise DatabaseUnavailable("all database connections are busy")
        try:
            for attempt in (1, 2):
                conn = self._take()
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql, params)
                        rows = cur.fetchall()
                except psycopg2.errors.UndefinedTable as exc:
                    self._give(conn)
                    raise DatabaseUnavailable(
                        "the database holds no rates data yet: run rates-seed"
                    ) from exc
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


# rates-seed sends NOTIFY on this channel in the transaction that loads new data
# (db/post-load.sql), so the notification arrives when that transaction commits.
CHANNEL = "rates_data"


class DataVersion:
    """Whether the data is unchanged since an answer was computed, from LISTEN rates_data.

    `current()` is a generation number, or None when nothing can be promised: no
    listening connection (not started, PostgreSQL down), or a message waiting on it
    (a notification, or the server closing it) that the listening thread has not
    handled yet. The thread bumps the generation before it reads anything, so an
    answer tagged with a generation is served again only while no notification
    has arrived since it was computed.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._conn: psycopg2.extensions.connection | None = None
        self._generation = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start listening, once per process; the thread connects in the background."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rates-listen", daemon=True)
                self._thread.start()

    def current(self) -> int | None:
        conn = self._conn
        if conn is None:
            return None
        try:
            # Readability first, then the generation: see _listen().
            waiting, _, _ = select.select([conn], [], [], 0)
        except (OSError, ValueError):
            return None
        return None if waiting else self._generation

    def _changed(self, conn: psycopg2.extensions.connection | None) -> None:
        with self._lock:
            self._generation += 1
            self._conn = conn

    def _run(self) -> None:
        while True:
            try:
                conn = psycopg2.connect("", **self._settings.connect_kwargs())
            except Exception:  # down, refused, no slot: answers are simply not kept
                time.sleep(1)
                continue
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                # Anything kept before this point may predate a load we did not hear of.
                self._changed(conn)
                self._listen(conn)
            except Exception:  # the connection broke: forget everything kept
                self._changed(None)
            finally:
                conn.close()
            time.sleep(0.5)

    def _listen(self, conn: psycopg2.extensions.connection) -> None:
        while True:
            select.select([conn], [], [])
            # Bump before reading, so that between the read and the bump no caller
            # sees an idle socket and the old generation.
            self._changed(conn)
            conn.poll()
            conn.notifies.clear()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
