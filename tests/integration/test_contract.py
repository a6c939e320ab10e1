"""The API answers as the original service did: its recorded answers on the
reference dump, and the same shape on the project's own sample data."""

from __future__ import annotations

import collections
import datetime as dt
import io
import math
from typing import Any

import pytest

from rates import sample
from testlib.data import contract_cases


def assert_same_json(got: Any, want: Any, where: str = "$") -> None:
    """Equal JSON, floats equal to 1e-9 (the contract's tolerance)."""
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, int | float) and isinstance(want, int | float), where
        assert math.isclose(got, want, rel_tol=0, abs_tol=1e-9), f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: {got} != {want}"
        for key in want:
            assert_same_json(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_json(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['path']}?{'&'.join(f'{k}={v}' for k, v in case['query'].items())}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        try:
            cases = contract_cases()
        except pytest.skip.Exception:
            absent = [
                pytest.param(
                    None,
                    marks=pytest.mark.skip(
                        reason="../shared/data/contract_cases.json is absent (CI has ../shared)"
                    ),
                )
            ]
            metafunc.parametrize("case", absent)
            return
        metafunc.parametrize("case", cases, ids=[_case_id(c) for c in cases])


def test_reference_contract(reference_client, case) -> None:
    r = reference_client.get(case["path"], query_string=case["query"])
    assert r.status_code == case["status"], r.json
    if case["status"] == 200:
        assert_same_json(r.json, case["body"])
    else:
        assert r.json["error"] == "bad_request"


# --- the sample data, against an oracle computed from the generated rows ---


@pytest.fixture(scope="module")
def sample_rows() -> dict[str, list[list[str]]]:
    out = io.StringIO()
    sample.write_dump(out)
    tables: dict[str, list[list[str]]] = {}
    current = None
    for line in out.getvalue().splitlines():
        if current is not None:
            if line == "\\.":
                current = None
            else:
                tables[current].append(line.split("\t"))
        elif line.startswith("COPY "):
            current = line.split()[1]
            tables[current] = []
    return tables


def expected(
    tables: dict[str, list[list[str]]], orig: str, dest: str, date_from: str, date_to: str
) -> list[dict[str, Any]]:
    """What the original service answers, computed in Python from the raw rows."""
    by_day: dict[str, list[int]] = collections.defaultdict(list)
    for o, d, when, price in tables["prices"]:
        if (o, d) == (orig, dest):
            by_day[when].append(int(price))
    out = []
    day, first = dt.date.fromisoformat(date_to), dt.date.fromisoformat(date_from)
    while day >= first:
        prices = by_day.get(day.isoformat(), [])
        out.append(
            {
                "day": day.isoformat(),
                "count": len(prices) or None,
                "price": sum(prices) / len(prices) if len(prices) >= 3 else None,
            }
        )
        day -= dt.timedelta(days=1)
    return out


SAMPLE_QUERIES = [
    ("CNSGH", "NLRTM", "2016-01-01", "2016-01-31"),
    ("CNYTN", "GBFXT", "2015-12-29", "2016-02-02"),
    ("CNNGB", "DEHAM", "2016-01-10", "2016-01-10"),
    ("CNTAO", "NOOSL", "2016-01-25", "2016-02-03"),
    ("NLRTM", "CNSGH", "2016-01-01", "2016-01-05"),  # the reverse route has no prices
    ("CNSGH", "NOPE1", "2016-01-01", "2016-01-03"),
    ("china_east_main", "benelux", "2016-01-01", "2016-01-05"),  # slugs match no price
]


def test_oracle_is_not_trivial(sample_rows) -> None:
    days = expected(sample_rows, "CNYTN", "GBFXT", "2016-01-01", "2016-01-31")
    assert {d["count"] for d in days} >= {None, 1, 2, 3}
    assert sum(d["price"] is not None for d in days) > 5


@pytest.mark.parametrize(("orig", "dest", "date_from", "date_to"), SAMPLE_QUERIES)
def test_sample_matches_oracle(sample_client, sample_rows, orig, dest, date_from, date_to) -> None:
    r = sample_client.get(
        "/rates",
        query_string={
            "date_from": date_from,
            "date_to": date_to,
            "orig_code": orig,
            "dest_code": dest,
        },
    )
    assert r.status_code == 200
    assert_same_json(r.json, {"rates": expected(sample_rows, orig, dest, date_from, date_to)})


def test_sample_answers_are_meaningful(sample_client) -> None:
    """Pinned values: the sample's documented route has an average every day."""
    r = sample_client.get(
        "/rates",
        query_string={
            "date_from": "2016-01-01",
            "date_to": "2016-01-03",
            "orig_code": "CNSGH",
            "dest_code": "NLRTM",
        },
    )
    rates = r.json["rates"]
    assert [x["day"] for x in rates] == ["2016-01-03", "2016-01-02", "2016-01-01"]
    assert all(x["count"] >= 3 and isinstance(x["price"], float) for x in rates)
    gappy = sample_client.get(
        "/rates",
        query_string={
            "date_from": "2016-01-01",
            "date_to": "2016-01-31",
            "orig_code": "CNYTN",
            "dest_code": "GBFXT",
        },
    ).json["rates"]
    assert {x["count"] for x in gappy} >= {None, 1, 2, 3}
    assert [x["price"] for x in gappy if x["count"] is not None and x["count"] < 3] == [None] * len(
        [x for x in gappy if x["count"] is not None and x["count"] < 3]
    )
