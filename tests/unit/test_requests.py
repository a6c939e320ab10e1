"""Request validation and the day-by-day answer, without a database.

The app here points at a port nothing listens on: a request that reached
the database would get a 503, so a 400 proves it was refused before.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json

import pytest

from rates import settings
from rates.app import create_app, json_bytes, rates_json

NOWHERE = {
    "PGDATABASE": "rates",
    "PGHOST": "127.0.0.1",
    "PGPORT": "9",
    "RATES_CONNECT_TIMEOUT": "2",
}
GOOD = {
    "date_from": "2016-01-01",
    "date_to": "2016-01-31",
    "orig_code": "CNSGH",
    "dest_code": "NLRTM",
}


@pytest.fixture(scope="module")
def client():
    return create_app(settings.load(NOWHERE)).test_client()


def test_hello(client) -> None:
    r = client.get("/")
    assert (r.status_code, r.json) == (200, {"message": "Hello world!"})


def test_healthz_needs_no_database(client) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.json) == (200, {"status": "ok"})
    assert r.headers["Rates-Build"] == importlib.metadata.version("rates")


def test_healthz_names_the_build() -> None:
    labelled = create_app(settings.load({**NOWHERE, "RATES_BUILD": "v2"})).test_client()
    r = labelled.get("/healthz")
    assert (r.status_code, r.json) == (200, {"status": "ok"})
    assert r.headers["Rates-Build"] == importlib.metadata.version("rates") + "+v2"
    # Only /healthz carries it: the answers themselves are the same in every release.
    assert "Rates-Build" not in labelled.get("/").headers


def test_openapi_names_the_installed_version(client) -> None:
    info = client.get("/openapi.json").json["info"]
    assert info["version"] == importlib.metadata.version("rates")


def test_readyz_without_database(client) -> None:
    r = client.get("/readyz")
    assert (r.status_code, r.json) == (
        503,
        {"error": "unavailable", "message": "database unavailable"},
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"date_from": None}, "date_from is required"),
        ({"date_to": ""}, "date_to is required"),
        ({"orig_code": None}, "orig_code is required"),
        ({"dest_code": ""}, "dest_code is required"),
        ({"date_to": "not-a-date"}, "date_to must be a date in the form YYYY-MM-DD"),
        ({"date_from": "2016-02-30"}, "date_from is not a valid date"),
        ({"date_from": "20160101"}, "date_from must be a date in the form YYYY-MM-DD"),
        (
            {"date_from": "\uff12\uff10\uff11\uff16-01-01"},  # full-width digits
            "date_from must be a date in the form YYYY-MM-DD",
        ),
        (
            {"orig_code": "CNSGH' OR '1'='1"},
            "orig_code must be a port code or a region slug: 1 to 64 letters, digits, '_' or '-'",
        ),
        (
            {"dest_code": "x" * 65},
            "dest_code must be a port code or a region slug: 1 to 64 letters, digits, '_' or '-'",
        ),
        (
            {"dest_code": "NLR\u00c5M"},
            "dest_code must be a port code or a region slug: 1 to 64 letters, digits, '_' or '-'",
        ),
        (
            {"orig_code": "CN\x00SGH"},
            "orig_code must be a port code or a region slug: 1 to 64 letters, digits, '_' or '-'",
        ),
        (
            {"date_from": "2015-01-01"},
            "the range from date_from to date_to is 396 days; at most 366 are allowed",
        ),
        (
            {"date_from": "0001-01-01", "date_to": "9999-12-31"},
            "the range from date_from to date_to is 3652059 days; at most 366 are allowed",
        ),
    ],
)
def test_bad_requests_never_reach_the_database(client, change, message) -> None:
    query = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    r = client.get("/rates", query_string=query)
    assert r.status_code == 400
    assert r.json == {"error": "bad_request", "message": message}


def test_reversed_range_is_empty(client) -> None:
    r = client.get(
        "/rates", query_string={**GOOD, "date_from": "2016-01-05", "date_to": "2016-01-01"}
    )
    assert (r.status_code, r.json) == (200, {"rates": []})


@pytest.mark.parametrize(
    ("path", "status", "error"), [("/nope", 404, "not_found"), ("/rates/x", 404, "not_found")]
)
def test_unknown_paths_are_json(client, path, status, error) -> None:
    r = client.get(path)
    assert (r.status_code, r.json["error"]) == (status, error)


def test_wrong_method_is_json(client) -> None:
    r = client.post("/rates")
    assert (r.status_code, r.json["error"]) == (405, "method_not_allowed")


def test_rates_json_lists_every_day_downwards() -> None:
    d = dt.date
    rows = [(d(2016, 1, 3), 3, 10.5), (d(2016, 1, 1), 2, 7.0), (d(2016, 1, 4), 4, 1154.0 + 1 / 3)]
    expected = {
        "rates": [
            {"day": "2016-01-04", "count": 4, "price": 1154.3333333333333},
            {"day": "2016-01-03", "count": 3, "price": 10.5},
            {"day": "2016-01-02", "count": None, "price": None},
            {"day": "2016-01-01", "count": 2, "price": None},
            {"day": "2015-12-31", "count": None, "price": None},
        ]
    }
    body = rates_json(rows, d(2015, 12, 31), d(2016, 1, 4))
    assert json.loads(body) == expected
    # Byte for byte what the json module writes, as Flask's JSON provider did before.
    assert body == json_bytes(expected)
    assert body.startswith(b'{"rates":[{"count":4,"day":"2016-01-04","price":1154.3333333333333}')


@pytest.mark.parametrize(
    "price", [0.0, 1.0, 1e-05, 1.5e-07, 123456789012345.6, 1e15, 1e16, 1.2345e22, -3.25]
)
def test_rates_json_writes_prices_as_the_json_module(price: float) -> None:
    day = dt.date(2016, 1, 1)
    expected = {"rates": [{"count": 3, "day": "2016-01-01", "price": price}]}
    assert rates_json([(day, 3, price)], day, day) == json_bytes(expected)


def test_rates_json_at_the_first_representable_day() -> None:
    first = dt.date.min
    assert json.loads(rates_json([], first, first)) == {
        "rates": [{"day": "0001-01-01", "count": None, "price": None}]
    }


def test_an_unexpected_error_is_a_json_500_without_details() -> None:
    app = create_app(settings.load(NOWHERE))

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    r = app.test_client().get("/boom")
    assert (r.status_code, r.json) == (
        500,
        {"error": "internal_error", "message": "internal server error"},
    )
