"""The answer cache: 200 answers to GET /rates kept per worker while the data is unchanged.

Two parts: `DataVersion` says whether the data may have changed (it LISTENs for the
notification rates-seed sends when it commits new data), and `AnswerCache` is the WSGI
middleware that keeps and serves answers while `DataVersion` vouches for them.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg2
import psycopg2.extensions

from rates.settings import Settings

# Answers kept per worker process, at most; past this the cache starts again empty.
CACHE_BYTES = 32 * 1024 * 1024

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


class AnswerCache:
    """WSGI middleware: 200 answers to GET /rates kept by query string while the data is unchanged.

    The same query string on the same data always gets the same bytes, so a kept
    answer is the answer. It is served only while `DataVersion` vouches that no
    rates-seed has committed new data since it was computed; without a listening
    connection (PostgreSQL down, not started yet) every request goes to the app,
    and so to the database, as before. A hit skips the app and the database.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], version: DataVersion) -> None:
        self._app = app
        self._version = version
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._entries: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
        self._bytes = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != "/rates" or environ.get("REQUEST_METHOD") != "GET":
            return self._app(environ, start_response)
        key = environ.get("QUERY_STRING", "")
        generation = self._version.current()
        if generation is not None:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == generation:
                start_response("200 OK", list(entry[1]))
                return [entry[2]]
        answered: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answered.append((status, headers))
            return start_response(status, headers, exc_info)

        response = self._app(environ, capture)
        if not answered or answered[0][0] != "200 OK":
            return response
        try:
            body = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        # Listening starts with the first answer from the database, in the worker
        # that serves it: never at import, and not while the database is unreachable.
        self._version.start()
        if generation is not None:
            self._keep(generation, key, answered[0][1], body)
        return [body]

    def _keep(self, generation: int, key: str, headers: list[tuple[str, str]], body: bytes) -> None:
        with self._lock:
            if generation != self._generation or self._bytes + len(body) > CACHE_BYTES:
                self._entries = {}
                self._bytes = 0
                self._generation = generation
            if key not in self._entries:
                self._entries[key] = (generation, list(headers), body)
                self._bytes += len(body) + len(key)
