"""/openapi.json describes the API truly: every route, and a thousand generated requests."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from rates import settings as rates_settings
from rates.app import create_app
from testlib.figures import figures
from testlib.serve import make_client

schemathesis = pytest.importorskip(
    "schemathesis",
    minversion="4.0",
    reason=(
        "schemathesis 4 is not installed (nixpkgs has no package of it, so the Nix dev shell "
        "lacks it): in a venv, pip install -e '.[test]'"
    ),
)

# Generated requests per operation. Only /rates takes parameters; for the others
# hypothesis stops at the one request there is. Schemathesis leaves out the
# operation that serves the schema itself.
EXAMPLES = {"GET /rates": 1000, "GET /": 10, "GET /healthz": 10, "GET /readyz": 10}


def test_every_route_is_described_and_every_description_routed(sample_env) -> None:
    app = create_app(rates_settings.load(sample_env))
    routed = {str(rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    described = set(make_client(sample_env).get("/openapi.json").json["paths"])
    assert routed == described


def test_generated_requests_conform(sample_env) -> None:
    """No 5xx, and every answer matches the description (status, content type, schema)."""
    app = create_app(rates_settings.load(sample_env))
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        sent[operation.label] = 0

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES[operation.label],
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            sent[case.operation.label] += 1
            case.call_and_validate(
                # A range longer than RATES_MAX_RANGE_DAYS is a 400 for parameters
                # the schema accepts one by one: OpenAPI cannot state a limit
                # across two parameters, so "schema-valid data is accepted" is
                # not a check this API can pass. Every other check runs.
                excluded_checks=[schemathesis.checks.positive_data_acceptance],
            )

        check()
    assert sent == {"GET /rates": 1000, "GET /": 1, "GET /healthz": 1, "GET /readyz": 1}
    figures("openapi fuzzing", requests=sum(sent.values()), per_operation=sent)
