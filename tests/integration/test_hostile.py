"""Hostile and odd input against the real database: 4xx or a correct 200, never 5xx."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PARAMS = ("date_from", "date_to", "orig_code", "dest_code")
VALID = {
    "date_from": "2016-01-01",
    "date_to": "2016-01-31",
    "orig_code": "CNSGH",
    "dest_code": "NLRTM",
}

hostile_text = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "'; DROP TABLE prices; --",
            "CNSGH' OR '1'='1",
            "\x00",
            "%00",
            "../../etc/passwd",
            "${jndi:ldap://x}",
            "<script>alert(1)</script>",
            "NLRTM\n",
            "日本",
            "🚢",
            " CNSGH",
            "x" * 10_000,
            "9999-12-31",
            "0000-01-01",
            "2016-13-01",
            "2016-1-1",
            "-2016-01-01",
        ]
    ),
    st.dates().map(lambda d: d.isoformat()),
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=70),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(PARAMS), st.one_of(st.none(), hostile_text)))
def test_never_a_server_error(sample_client, changes) -> None:
    query = {k: v for k, v in {**VALID, **changes}.items() if v is not None}
    r = sample_client.get("/rates", query_string=query)
    assert r.status_code in (200, 400), (query, r.status_code, r.json)
    assert r.is_json
    if r.status_code == 200:
        assert set(r.json) == {"rates"}
    else:
        assert r.json["error"] == "bad_request" and r.json["message"]


def test_repeated_and_unknown_parameters(sample_client) -> None:
    """The first of a repeated parameter counts, as in Flask; unknown ones are ignored."""
    r = sample_client.get(
        "/rates?date_from=2016-01-01&date_from=x&date_to=2016-01-01"
        "&orig_code=CNSGH&dest_code=NLRTM&extra=1"
    )
    assert r.status_code == 200
    assert len(r.json["rates"]) == 1


def test_many_parameters_are_refused(sample_client) -> None:
    query = "&".join(f"p{i}=1" for i in range(13))
    r = sample_client.get(
        f"/rates?{query}&date_from=2016-01-01&date_to=2016-01-01&orig_code=CNSGH&dest_code=NLRTM"
    )
    assert (r.status_code, r.json) == (
        400,
        {"error": "bad_request", "message": "too many query parameters: at most 16"},
    )
