"""The rates API: Flask application factory and routes."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from rates.openapi import spec
from rates.pool import Database, DatabaseUnavailable, DataVersion
from rates.settings import Settings

# Port codes (CNGGZ), and anything shaped like one or like a region slug
# (china_main), which matches no price. Anything else is refused before it
# reaches the database.
CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Codes are matched exactly against prices.orig_code and dest_code, as the
# original service does: its recorded answer for china_main to
# north_europe_main (two region slugs with priced ports below them) is a
# null for every day, so a region slug matches no port. The index on
# (orig_code, dest_code, day) serves this query directly.
RATES_SQL = """
SELECT day, count(*), avg(price)::float8
FROM prices
WHERE orig_code = %(orig)s AND dest_code = %(dest)s
  AND day BETWEEN %(date_from)s AND %(date_to)s
GROUP BY day
"""

# The original service gives an average only for days with at least this many prices.
MIN_PRICES = 3
# /rates takes four parameters; a request with many more is refused unread.
MAX_PARAMETERS = 16


# Answers kept per worker process, at most; past this the cache starts again empty.
CACHE_BYTES = 32 * 1024 * 1024


class AnswerCache:
    """WSGI middleware: 200 answers to GET /rates kept by query string while the data is unchanged.

    The same query string on the same data always gets the same bytes, so a kept
    answer is the answer. It is served only while `DataVersion` vouches that no
    rates-seed has committed new data since it was computed; without a listening
    connection (PostgreSQL down, not started yet) every request goes to the app,
    and so to the database, as before. A hit skips Flask and the database.
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


class BadRequest(Exception):
    """A client error; the message says what to change."""


def _param(name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise BadRequest(f"{name} is required")
    return value


def _date(name: str) -> dt.date:
    value = _param(name)
    if not DATE.fullmatch(value):
        raise BadRequest(f"{name} must be a date in the form YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} is not a valid date") from None


def _code(name: str) -> str:
    value = _param(name)
    if not CODE.fullmatch(value):
        raise BadRequest(
            f"{name} must be a port code or a region slug: 1 to 64 letters, digits, '_' or '-'"
        )
    return value


def daily_rates(
    rows: list[tuple[dt.date, int, float]], date_from: dt.date, date_to: dt.date
) -> list[dict[str, Any]]:
    """One entry per day from date_to down to date_from, as the original service lists them."""
    by_day = {day: (count, avg) for day, count, avg in rows}
    result = []
    day = date_to
    one = dt.timedelta(days=1)
    while day >= date_from:
        count, avg = by_day.get(day, (None, None))
        result.append(
            {
                "day": day.isoformat(),
                "count": count,
                "price": avg if count is not None and count >= MIN_PRICES else None,
            }
        )
        if day == dt.date.min:
            break
        day -= one
    return result


def create_app(
    settings: Settings, database: Database | None = None, *, cache: bool = True
) -> Flask:
    """Build the application; nothing connects until the first request.

    `cache=False` leaves out the answer cache (the benchmark measures both).
    """
    app = Flask(__name__)
    app.json.sort_keys = True
    db = database if database is not None else Database(settings)
    app.extensions["rates.database"] = db

    @app.get("/")
    def hello() -> Any:
        return {"message": "Hello world!"}

    @app.get("/healthz")
    def healthz() -> Any:
        # Rates-Build: which release answers, e.g. while a rolling upgrade runs.
        return {"status": "ok"}, {"Rates-Build": settings.build}

    @app.get("/readyz")
    def readyz() -> Any:
        # A real query on the data the API serves, not just a ping.
        db.query("SELECT 1 FROM regions LIMIT 1")
        return {"status": "ready"}

    @app.get("/openapi.json")
    def openapi() -> Any:
        return spec(settings)

    @app.get("/rates")
    def rates() -> Any:
        if len(request.args) > MAX_PARAMETERS:
            raise BadRequest(f"too many query parameters: at most {MAX_PARAMETERS}")
        date_from = _date("date_from")
        date_to = _date("date_to")
        orig = _code("orig_code")
        dest = _code("dest_code")
        if date_from > date_to:
            return {"rates": []}
        days = (date_to - date_from).days + 1
        if days > settings.max_range_days:
            raise BadRequest(
                f"the range from date_from to date_to is {days} days; "
                f"at most {settings.max_range_days} are allowed"
            )
        rows = db.query(
            RATES_SQL,
            {"orig": orig, "dest": dest, "date_from": date_from, "date_to": date_to},
        )
        return {"rates": daily_rates(rows, date_from, date_to)}

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Any:
        return jsonify(error="bad_request", message=str(exc)), 400

    @app.errorhandler(DatabaseUnavailable)
    def unavailable(exc: DatabaseUnavailable) -> Any:
        app.logger.warning("database unavailable: %s", exc)
        return jsonify(error="unavailable", message=str(exc)), 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        name = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error=name, message=exc.description), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        app.logger.exception("unhandled error")
        return jsonify(error="internal_error", message="internal server error"), 500

    if cache:
        app.wsgi_app = AnswerCache(app.wsgi_app, DataVersion(settings))  # type: ignore[method-assign]
    return app
