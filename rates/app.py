"""The rates API: Flask application factory and routes.

GET /rates, the one route under load, is answered by `RatesRoute`, a WSGI
callable in front of Flask that gives the same bytes, status and headers as the
Flask route below without Flask's per-request machinery (request context, URL
matching, response object); every other request goes to Flask.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from rates.cache import AnswerCache, DataVersion
from rates.openapi import spec
from rates.pool import Database, DatabaseUnavailable, Statement
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
# (orig_code, dest_code, day) serves this query directly. Prepared once per
# pooled connection (rates/pool.py), so PostgreSQL does not plan it per request.
RATES = Statement(
    "rates_daily",
    """
SELECT day, count(*), avg(price)::float8
FROM prices
WHERE orig_code = $1 AND dest_code = $2
  AND day BETWEEN $3 AND $4
GROUP BY day
""",
    ("text", "text", "date", "date"),
)

# The original service gives an average only for days with at least this many prices.
MIN_PRICES = 3
# /rates takes four parameters; a request with many more is refused unread.
MAX_PARAMETERS = 16

# JSON as Flask's default provider writes it (app.json: sorted keys, compact,
# ASCII only, a final newline), so both paths give the same bytes.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
JSON_HEADERS = (("Content-Type", "application/json"),)


def json_bytes(value: Any) -> bytes:
    """`value` as JSON, byte for byte as Flask's jsonify writes it."""
    return (_ENCODER.encode(value) + "\n").encode()


class BadRequest(Exception):
    """A client error; the message says what to change."""


def query_args(query_string: str) -> dict[str, str]:
    """The query string's parameters as Flask's `request.args` reads them: the first value of each.

    `query_string` is the WSGI QUERY_STRING (latin-1, as PEP 3333 carries bytes).
    """
    args: dict[str, str] = {}
    # The same call as werkzeug's Request.args, with the codec error handler that
    # werkzeug registers on import (bytes that are not UTF-8 stay percent-encoded).
    pairs = parse_qsl(
        query_string.encode("latin1").decode(), keep_blank_values=True, errors="werkzeug.url_quote"
    )
    for name, value in pairs:
        args.setdefault(name, value)
    return args


def _param(args: Mapping[str, str], name: str) -> str:
    value = args.get(name)
    if value is None or value == "":
        raise BadRequest(f"{name} is required")
    return value


def _date(args: Mapping[str, str], name: str) -> dt.date:
    value = _param(args, name)
    if not DATE.fullmatch(value):
        raise BadRequest(f"{name} must be a date in the form YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} is not a valid date") from None


def _code(args: Mapping[str, str], name: str) -> str:
    value = _param(args, name)
    if not CODE.fullmatch(value):
        raise BadRequest(
            f"{name} must be a port code or a region slug: 1 to 64 letters, digits, '_' or '-'"
        )
    return value


@functools.lru_cache(maxsize=4096)
def _iso_day(ordinal: int) -> str:
    return dt.date.fromordinal(ordinal).isoformat()


# One entry of the answer, as json_bytes writes {"count": ..., "day": ..., "price": ...}:
# keys sorted, ints as int.__repr__ and floats as float.__repr__, which is what the json
# module writes (an average of integer prices is always finite).
_NO_PRICES = '{"count":null,"day":"%s","price":null}'
_TOO_FEW = '{"count":%d,"day":"%s","price":null}'
_AVERAGE = '{"count":%d,"day":"%s","price":%r}'


def rates_json(
    rows: list[tuple[dt.date, int, float]], date_from: dt.date, date_to: dt.date
) -> bytes:
    """The answer: one entry per day from date_to down to date_from, as the original lists them.

    The same bytes as json_bytes({"rates": [...]}) of the entries, written directly:
    building dicts for the json module took half of the request's own Python time.
    """
    by_day = {day.toordinal(): (count, avg) for day, count, avg in rows}
    entries = []
    for ordinal in range(date_to.toordinal(), date_from.toordinal() - 1, -1):
        found = by_day.get(ordinal)
        if found is None:
            entries.append(_NO_PRICES % _iso_day(ordinal))
        elif found[0] < MIN_PRICES:
            entries.append(_TOO_FEW % (found[0], _iso_day(ordinal)))
        else:
            entries.append(_AVERAGE % (found[0], _iso_day(ordinal), found[1]))
    return ('{"rates":[' + ",".join(entries) + "]}\n").encode()


EMPTY = json_bytes({"rates": []})


def rates_answer(args: Mapping[str, str], db: Database, settings: Settings) -> bytes:
    """The body of a 200 answer to /rates with these parameters; BadRequest if they are wrong."""
    if len(args) > MAX_PARAMETERS:
        raise BadRequest(f"too many query parameters: at most {MAX_PARAMETERS}")
    date_from = _date(args, "date_from")
    date_to = _date(args, "date_to")
    orig = _code(args, "orig_code")
    dest = _code(args, "dest_code")
    if date_from > date_to:
        return EMPTY
    days = (date_to - date_from).days + 1
    if days > settings.max_range_days:
        raise BadRequest(
            f"the range from date_from to date_to is {days} days; "
            f"at most {settings.max_range_days} are allowed"
        )
    rows = db.query(RATES, (orig, dest, date_from, date_to))
    return rates_json(rows, date_from, date_to)


def unavailable(app: Flask, exc: DatabaseUnavailable) -> tuple[bytes, str]:
    """The 503 for a database that cannot answer: the reason for the client, the detail
    (the server's address, the driver's words) for the service's log only."""
    app.logger.warning("503 %s: %s", exc.reason, exc.detail)
    return json_bytes({"error": "unavailable", "message": exc.reason}), "503 SERVICE UNAVAILABLE"


class RatesRoute:
    """WSGI: GET /rates answered directly, with the bytes, status and headers of the Flask route.

    Anything else, and a query string that Flask would fail to read, goes to Flask.
    Errors are those of the Flask error handlers in create_app, logged the same way.
    """

    def __init__(
        self,
        flask_app: Flask,
        answer: Callable[[Mapping[str, str]], bytes],
    ) -> None:
        self.flask_app = flask_app
        self.next = flask_app.wsgi_app
        self._answer = answer

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/rates" or environ.get("REQUEST_METHOD") != "GET":
            return self.next(environ, start_response)
        try:
            args = query_args(environ.get("QUERY_STRING", ""))
        except Exception:  # Flask answers whatever it answered before
            return self.next(environ, start_response)
        try:
            body = self._answer(args)
            status = "200 OK"
        except BadRequest as exc:
            body = json_bytes({"error": "bad_request", "message": str(exc)})
            status = "400 BAD REQUEST"
        except DatabaseUnavailable as exc:
            body, status = unavailable(self.flask_app, exc)
        except Exception:
            self.flask_app.logger.exception("unhandled error")
            body = json_bytes({"error": "internal_error", "message": "internal server error"})
            status = "500 INTERNAL SERVER ERROR"
        start_response(status, [*JSON_HEADERS, ("Content-Length", str(len(body)))])
        return [body]


def create_app(
    settings: Settings, database: Database | None = None, *, cache: bool = True
) -> Flask:
    """Build the application; nothing connects until the first request.

    `cache=False` leaves out the answer cache (the benchmark measures both).
    """
    app = Flask(__name__)
    json_provider = DefaultJSONProvider(app)
    json_provider.sort_keys = True
    app.json = json_provider
    db = database if database is not None else Database(settings)
    app.extensions["rates.database"] = db

    def answer(args: Mapping[str, str]) -> bytes:
        return rates_answer(args, db, settings)

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

    # Reached for HEAD, and for a query string RatesRoute hands over; RatesRoute
    # answers every other GET /rates with the same bytes.
    @app.get("/rates")
    def rates() -> Any:
        return Response(answer(request.args), mimetype="application/json")

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Any:
        return jsonify(error="bad_request", message=str(exc)), 400

    @app.errorhandler(DatabaseUnavailable)
    def database_unavailable(exc: DatabaseUnavailable) -> Any:
        body, status = unavailable(app, exc)
        return Response(body, status, mimetype="application/json")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        name = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error=name, message=exc.description), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Any:
        app.logger.exception("unhandled error")
        return jsonify(error="internal_error", message="internal server error"), 500

    app.wsgi_app = RatesRoute(app, answer)  # type: ignore[method-assign]
    if cache:
        app.wsgi_app = AnswerCache(app.wsgi_app, DataVersion(settings))  # type: ignore[method-assign]
    return app
