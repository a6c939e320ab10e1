"""A small connection pool that survives a PostgreSQL restart, and keeps time.

psycopg2's own pools do not fit: they raise at once when exhausted instead
of waiting, close every connection above `minconn` when it is returned, and
never notice that a pooled connection died with the server. Here a request
waits (up to the connect timeout) for one of `RATES_POOL_SIZE` connections;
a query that fails because its connection broke is retried once on a fresh
one (every query the service runs is a read, so a retry is safe), and broken
connections are dropped.

Every query has a deadline: RATES_CONNECT_TIMEOUT to get a connection (a free
slot, then connecting), and RATES_STATEMENT_TIMEOUT_MS more for the answer,
retry included. So an API host answers within their sum whatever the database
does (down, cut off, hung), and a load balancer can give up on a host that
takes longer (nix/hosts/cluster/haproxy.cfg). libpq's blocking calls cannot
keep such a deadline (its connect_timeout is whole seconds, at least 2, and a
query on a cut connection waits for TCP), so connections are asynchronous
(psycopg2's `async_`): libpq never blocks, and `_wait` polls the socket until
the deadline. Asynchronous connections are always in autocommit mode, so none
is ever left `idle in transaction`. A connection that misses its deadline is
closed; the server's own statement_timeout ends the query there.

A `Statement` is prepared on each connection the first time that connection
runs it (`PREPARE`), then run with `EXECUTE`: PostgreSQL parses and plans it
once per connection instead of on every request. A new connection (after a
PostgreSQL restart, say) prepares it again.

Errors: `DatabaseUnavailable` carries a `reason` for clients, one of three
stable phrases (UNAVAILABLE, NOT_SEEDED, TIMED_OUT), and a `detail` for the
service's log (the server's address, the driver's words), which no client sees.
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

# What a client is told, in the `message` of a 503: stable phrases to act on.
UNAVAILABLE = "database unavailable"
NOT_SEEDED = "not seeded yet"
TIMED_OUT = "timed out"


class DatabaseUnavailable(Exception):
    """The database cannot answer now: str() and `reason` for clients, `detail` for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class _Late(Exception):
    """The deadline passed while waiting on the database."""


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


def _wait(conn: _Connection, deadline: float) -> None:
    """Drive an asynchronous connection until its operation is done, or raise _Late.

    The loop of psycopg2's documentation ("Asynchronous support"), with a deadline;
    the server's errors are raised here, by poll(). libpq is asked before the socket
    is polled, even just after a query was sent: the answer is sometimes in by then,
    and polling first measured worse at p99 (bench/notes.md, with what this loop costs
    against a blocking connection and why the pool pays it).
    """
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Late
        # poll(2), not select(2): a descriptor number above 1023 is fine. The number is
        # read each time: libpq may open another socket while connecting.
        poller = select.poll()
        events = select.POLLIN if state == psycopg2.extensions.POLL_READ else select.POLLOUT
        poller.register(conn.fileno(), events)
        poller.poll(max(1, round(left * 1000)))


class Database:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        # Connections are opened on first use, in the process that uses them:
        # nothing connects at import time, and no socket crosses a fork.
        self._idle: list[_Connection] = []
        # Bounds the connections open at once, idle or busy.
        self._slots = threading.BoundedSemaphore(settings.pool_size)

    def _take(self, deadline: float, fresh: bool = False) -> _Connection:
        """An idle connection, or (none idle, or `fresh`) a new one by `deadline`."""
        with self._lock:
            if self._idle and not fresh:
                return self._idle.pop()
        try:
            conn: _Connection = psycopg2.connect(
                "",
                connection_factory=_Connection,
                async_=True,
                **self._settings.connect_kwargs(),
            )
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailable(
                UNAVAILABLE, f"cannot connect to the database: {_first_line(exc)}"
            ) from exc
        # An error while polling lacks the server libpq names in a blocking connect's.
        where = f'server at "{conn.info.host}", port {conn.info.port}'
        try:
            _wait(conn, deadline)
        except psycopg2.OperationalError as exc:
            conn.close()
            raise DatabaseUnavailable(
                UNAVAILABLE, f"cannot connect to the database ({where}): {_first_line(exc)}"
            ) from exc
        except _Late:
            conn.close()
            raise DatabaseUnavailable(
                TIMED_OUT,
                f"no connection to the database ({where}) within "
                f"{self._settings.connect_timeout:g} s",
            ) from None
        except BaseException:
            conn.close()
            raise
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
        """Run one read-only statement and return all its rows, within the deadline."""
        started = time.monotonic()
        connect_by = started + self._settings.connect_timeout
        deadline = connect_by + self._settings.statement_timeout_ms / 1000
        if not self._slots.acquire(timeout=self._settings.connect_timeout):
            raise DatabaseUnavailable(
                TIMED_OUT,
                f"all {self._settings.pool_size} database connections of this worker were busy "
                f"for {self._settings.connect_timeout:g} s",
            )
        broke = False
        try:
            for attempt in (1, 2):
                # A retry connects within what is left of the whole deadline; after a
                # broken connection, to a new one: the idle ones went with the same server.
                conn = self._take(connect_by if attempt == 1 else deadline, fresh=broke)
                try:
                    with conn.cursor() as cur:
                        if isinstance(sql, Statement):
                            if sql.name not in conn.prepared:
                                cur.execute(sql.prepare)
                                _wait(conn, deadline)
                                conn.prepared.add(sql.name)
                            cur.execute(sql.execute, params)
                        else:
                            cur.execute(sql, params)
                        _wait(conn, deadline)
                        rows = cur.fetchall()
                except psycopg2.errors.UndefinedTable as exc:
                    self._give(conn)
                    raise DatabaseUnavailable(
                        NOT_SEEDED,
                        "the database holds no rates data yet: run rates-seed "
                        f"({_first_line(exc)})",
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
                        TIMED_OUT,
                        "the query took longer than the statement timeout "
                        f"({self._settings.statement_timeout_ms} ms): {_first_line(exc)}",
                    ) from exc
                except _Late:
                    # Mid-query: the connection cannot be reused. The server ends the
                    # query itself (statement_timeout).
                    self._give(conn, broken=True)
                    raise DatabaseUnavailable(
                        TIMED_OUT,
                        "no answer from the database within "
                        f"{deadline - started:.3g} s (RATES_CONNECT_TIMEOUT "
                        "+ RATES_STATEMENT_TIMEOUT_MS)",
                    ) from None
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    # The connection broke (server restarted, network cut): drop it
                    # and try once more on a new one.
                    self._give(conn, broken=True)
                    broke = True
                    if attempt == 2:
                        raise DatabaseUnavailable(
                            UNAVAILABLE, f"database error: {_first_line(exc)}"
                        ) from exc
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
