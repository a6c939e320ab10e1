"""Shared fixtures: a throwaway PostgreSQL, a fresh database per test, the real commands."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from testlib import figures as figures_module
from testlib.postgres import Cluster
from testlib.reports import REPORTS
from testlib.serve import Server

from rates import settings as settings_module
from rates.app import create_app

ROOT = Path(__file__).resolve().parents[1]
# The reference dump and the original service's answers, beside the clone;
# never copied into the project.
SHARED = Path(os.environ.get("RATES_SHARED_DATA", ROOT.parent / "shared" / "data"))
REFERENCE_DUMP = SHARED / "rates.sql"
CONTRACT = SHARED / "contract_cases.json"

# The dev shell (.envrc) exports the local stack's libpq variables for psql and
# rates-seed, and a developer may export the service's own. Every test passes
# the environment it means to its servers and commands; none may reach the
# developer's stack, or take a setting from it. (Test knobs such as
# RATES_SHARED_DATA and RATES_IMAGE stay.)
_SETTINGS = {v.name for v in settings_module.VARIABLES} | {"RATES_STATE_DIR"}
for _name in [n for n in os.environ if n.startswith("PG") or n in _SETTINGS]:
    del os.environ[_name]

LEVELS = (
    "unit",
    "integration",
    "faults",
    "e2e",
    "compose",
    "cluster",
    "kubernetes",
    "bench",
    "static",
)

# The same examples on every run, so that CI is reproducible and a failure is
# a real one; HYPOTHESIS_PROFILE=explore draws new examples each time.
hypothesis_settings.register_profile("default", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", database=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_report_header() -> list[str]:
    """The versions of the outside programs the tests run, for the CI log."""
    lines = []
    for name, argv in (
        ("postgres", ["postgres", "--version"]),
        ("process-compose", ["process-compose", "version", "--short"]),
    ):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except FileNotFoundError:
            out = "not installed"
        lines.append(f"{name}: {out}")
    return lines


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The directory a test lives in is its level: tests/unit/... is marked `unit`."""
    for item in items:
        parts = Path(item.fspath).relative_to(ROOT / "tests").parts
        if parts and parts[0] in LEVELS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def pytest_runtest_setup(item: pytest.Item) -> None:
    figures_module.start_test(item.nodeid)


_passed: set[str] = set()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report, so that fixtures can print logs when a test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    if report.when == "call" and report.passed:
        _passed.add(item.nodeid)
    return report


def pytest_sessionfinish() -> None:
    """The figures of the tests that passed, for the reliability report (testlib/figures.py)."""
    figures_module.write(_passed)


def needs_reference_dump() -> None:
    if not REFERENCE_DUMP.is_file():
        pytest.skip(
            f"the reference dump is not at {REFERENCE_DUMP} (only CI and the project's "
            "own machines have ../shared/data; set RATES_SHARED_DATA to point elsewhere)"
        )


def contract_cases() -> list[dict[str, Any]]:
    needs_reference_dump()
    return json.loads(CONTRACT.read_text())


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("pg"))
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[Cluster]:
    """A PostgreSQL of the test's own, for tests that stop, restart or fill it."""
    cluster = Cluster(tmp_path / "pg")
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def start_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Start the real rates-serve with this environment and wait for `ready`; stopped after."""
    servers: list[Server] = []

    def start(env: dict[str, str], ready: str = "/readyz") -> Server:
        server = Server(env, tmp_path / f"serve{len(servers)}.log")
        servers.append(server)
        server.wait_ready(ready)
        return server

    yield start
    for server in servers:
        server.stop()


_names = itertools.count()


@pytest.fixture
def new_database(pg: Cluster):  # type: ignore[no-untyped-def]
    """A factory of fresh, empty databases; returns their libpq environment."""

    def make() -> dict[str, str]:
        name = f"t{os.getpid()}_{next(_names)}"
        pg.create_database(name)
        return pg.env(name)

    return make


@pytest.fixture
def db_env(new_database) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return new_database()


def run_seed(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real rates-seed command with exactly this environment (plus PATH)."""
    return subprocess.run(
        ["rates-seed", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def seeded(env: dict[str, str], dump: Path | None = None) -> dict[str, str]:
    env = {**env, **({"RATES_DUMP": str(dump)} if dump else {})}
    result = run_seed(env)
    assert result.returncode == 0, result.stderr
    return env


@pytest.fixture(scope="session")
def sample_env(pg: Cluster) -> dict[str, str]:
    """A database with the sample data, shared read-only by the tests that only query it."""
    pg.create_database("sample")
    return seeded(pg.env("sample"))


@pytest.fixture(scope="session")
def reference_env(pg: Cluster) -> dict[str, str]:
    """A database with the reference dump, shared read-only."""
    needs_reference_dump()
    pg.create_database("reference")
    return seeded(pg.env("reference"), REFERENCE_DUMP)


def make_client(env: dict[str, str], **extra: str):  # type: ignore[no-untyped-def]
    app = create_app(settings_module.load({**env, **extra}))
    return app.test_client()


@pytest.fixture(scope="session")
def sample_client(sample_env):  # type: ignore[no-untyped-def]
    return make_client(sample_env)


@pytest.fixture(scope="session")
def reference_client(reference_env):  # type: ignore[no-untyped-def]
    return make_client(reference_env)
