"""GET /rates answered without Flask's request machinery (rates/app.py RatesRoute) gives the
status, headers and bytes that Flask's route and error handlers give, and that Flask's JSON
provider writes, on the contract, the sample and hostile input."""

from __future__ import annotations

import io
import json
import sys
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rates import settings as settings_module
from rates.app import RatesRoute, create_app
from testlib.data import contract_cases

Answer = tuple[str, list[tuple[str, str]], bytes]

VALID = {
    "date_from": "2016-01-01",
    "date_to": "2016-01-31",
    "orig_code": "CNSGH",
    "dest_code": "NLRTM",
}


def call(app: Any, query_string: str, method: str = "GET") -> Answer:
    """One WSGI call, as gunicorn makes it (QUERY_STRING is latin-1, as PEP 3333 says)."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/rates",
        "QUERY_STRING": query_string,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "3000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
    }
    answered: list[tuple[str, list[tuple[str, str]]]] = []
    body = app(environ, lambda status, headers, exc_info=None: answered.append((status, headers)))
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return answered[0][0], answered[0][1], data


def paths(env: dict[str, str]) -> tuple[RatesRoute, Any, Any]:
    """The app's front (RatesRoute), Flask behind it, and the Flask app itself."""
    app = create_app(settings_module.load(env), cache=False)
    route = app.wsgi_app
    assert isinstance(route, RatesRoute)
    return route, route.next, app


def as_flask_writes_it(app: Any, answer: Answer) -> Answer:
    """The same JSON value written by Flask's own provider (`jsonify`), as the routes did before."""
    status, _, body = answer
    with app.app_context():
        response = app.json.response(json.loads(body))
    return status, response.headers.to_wsgi_list(), response.get_data()


def assert_same(env_paths: tuple[RatesRoute, Any, Any], query_string: str) -> Answer:
    route, flask_wsgi, app = env_paths
    fast = call(route, query_string)
    assert fast == call(flask_wsgi, query_string), query_string
    assert fast == as_flask_writes_it(app, fast), query_string
    return fast


@pytest.fixture(scope="module")
def sample_paths(sample_env: dict[str, str]) -> tuple[RatesRoute, Any, Any]:
    return paths(sample_env)


def test_the_contract_byte_for_byte(reference_env: dict[str, str]) -> None:
    p = paths(reference_env)
    cases = [c for c in contract_cases() if c["path"] == "/rates"]
    statuses = [assert_same(p, urlencode(c["query"]))[0][:3] for c in cases]
    assert statuses == [str(c["status"]) for c in cases]


@pytest.mark.parametrize(
    ("query_string", "status"),
    [
        (urlencode(VALID), "200 OK"),
        (urlencode({**VALID, "date_from": "2016-02-01"}), "200 OK"),  # reversed: empty
        (urlencode({**VALID, "orig_code": "china_main"}), "200 OK"),  # nulls
        (urlencode({**VALID, "date_from": "2015-01-01"}), "400 BAD REQUEST"),  # too long
        (urlencode({**VALID, "date_to": "2016-02-30"}), "400 BAD REQUEST"),
        (urlencode({**VALID, "dest_code": ""}), "400 BAD REQUEST"),
        ("date_from=2016-01-01", "400 BAD REQUEST"),
        ("", "400 BAD REQUEST"),
        (urlencode(VALID) + "".join(f"&p{i}=1" for i in range(13)), "400 BAD REQUEST"),
        (urlencode(VALID) + "&date_from=x&extra=1", "200 OK"),  # the first value counts
        ("date_from=2016-01-01&date_to=2016-01-02&orig_code=CN%53GH&dest_code=NLRTM", "200 OK"),
        ("date_from=%zz&date_to=2016-01-02&orig_code=CNSGH&dest_code=NLRTM", "400 BAD REQUEST"),
        ("orig_code=%00&date_from=2016-01-01", "400 BAD REQUEST"),
        ("orig_code=%E6%97%A5&date_from=2016-01-01", "400 BAD REQUEST"),
    ],
)
def test_sample_byte_for_byte(sample_paths, query_string: str, status: str) -> None:
    assert assert_same(sample_paths, query_string)[0] == status


def test_undecodable_query_string_is_flasks_own_answer(sample_paths) -> None:
    """Bytes that are not UTF-8 (QUERY_STRING carries them as latin-1): Flask answers."""
    route, flask_wsgi, _ = sample_paths
    query_string = "date_from=\xff&date_to=2016-01-02"
    assert call(route, query_string) == call(flask_wsgi, query_string)


def test_head_and_other_methods_go_to_flask(sample_paths) -> None:
    route, flask_wsgi, _ = sample_paths
    for method in ("HEAD", "POST", "OPTIONS"):
        assert call(route, urlencode(VALID), method) == call(flask_wsgi, urlencode(VALID), method)
    status, headers, body = call(route, urlencode(VALID), "HEAD")
    assert (status, body) == ("200 OK", b"")
    assert dict(headers)["Content-Length"] == str(len(call(route, urlencode(VALID))[2]))


def test_database_down_byte_for_byte(caplog: pytest.LogCaptureFixture) -> None:
    p = paths({"PGDATABASE": "rates", "PGHOST": "127.0.0.1", "PGPORT": "9"})
    status, _, body = assert_same(p, urlencode(VALID))
    assert status == "503 SERVICE UNAVAILABLE"
    assert json.loads(body)["error"] == "unavailable"
    # Logged once per request, as Flask's handler logs it.
    warnings = [r for r in caplog.records if r.name == "rates.app" and r.levelname == "WARNING"]
    # Both paths log the reason and the detail the client does not see.
    assert [r.getMessage().split(":")[0] for r in warnings] == ["503 database unavailable"] * 2
    assert all('(server at "127.0.0.1", port 9)' in r.getMessage() for r in warnings)


query_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="%0123456789ABCDEFabcdef&=+;-_.", max_size=40),
    st.sampled_from(["2016-01-01", "2016-01-31", "CNSGH", "NLRTM", "", "%00", "%FF", "\x00"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(
        st.sampled_from([*VALID, "x"]), st.one_of(st.none(), query_text), max_size=5
    ),
    raw=st.one_of(st.just(""), st.text(max_size=30)),
)
def test_hostile_byte_for_byte(sample_paths, changes, raw) -> None:
    """Generated parameters, encoded or not, and raw text appended: the same answer both ways."""
    route, flask_wsgi, app = sample_paths
    query = {k: v for k, v in {**VALID, **changes}.items() if v is not None}
    query_string = urlencode(query) + raw
    # As gunicorn hands it over: the request line's bytes as latin-1.
    query_string = query_string.encode("utf-8").decode("latin-1")
    fast = call(route, query_string)
    assert fast == call(flask_wsgi, query_string), query_string
    if fast[0] != "500 INTERNAL SERVER ERROR":
        assert fast == as_flask_writes_it(app, fast), query_string
