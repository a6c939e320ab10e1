"""Shared fixtures: a throwaway PostgreSQL, a fresh database per test, the real commands."""

from __future__ import annotations

import itertools
import os
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from rates import settings as settings_module
from testlib import ROOT
from testlib import figures as figures_module
from testlib.data import REFERENCE_DUMP, needs_reference_dump, seeded
from testlib.postgres import Cluster
from testlib.serve import Server, make_client

# The dev shell (.envrc) exports the local stack's libpq variables for psql and
# rates-seed, and a developer may export the service's own. Every test passes
# the environment it means to its servers and commands; none may reach the
# developer's stack, or take a setting from it. (Test knobs such as
# RATES_SHARED_DATA and RATES_IMAGE stay.)
_SETTINGS = {v.name for v in settings_module.VARIABLES} | {"RATES_STATE_DIR"}
for _name in [n for n in os.environ if n.startswith("PG") or n in _SETTINGS]:
    del os.environ[_name]

# The same examples on every run, so that CI is reproducible and a failure is
# a real one; HYPOTHESIS_PROFILE=explore draws new examples each time.
hypothesis_settings.register_profile("default", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", database=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# The levels that need root (network namespaces, rootful podman, a cluster):
# pyproject.toml's tool.rates.root-levels, which .ci/run reads too.
ROOT_LEVELS: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["rates"][
    "root-levels"
]
UNPRIVILEGED = f"not ({' or '.join(ROOT_LEVELS)})"


def pytest_configure(config: pytest.Config) -> None:
    """A bare `pytest` runs every level but the root ones; `-m` or a path chooses otherwise."""
    if not config.option.markexpr and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.option.markexpr = UNPRIVILEGED


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The versions of the outside programs the tests run, for the CI log."""
    lines = []
    if config.option.markexpr == UNPRIVILEGED:
        lines.append(
            f"left out, as they need root: {', '.join(ROOT_LEVELS)}"
            ' (sudo env "PATH=$PATH:/usr/sbin:/sbin" .venv/bin/pytest -m LEVEL; docs/testing.md)'
        )
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The directory a test lives in is its level: tests/unit/... is marked `unit`.

    The levels are the markers pyproject.toml declares."""
    levels = {line.split(":")[0] for line in config.getini("markers")}
    for item in items:
        parts = Path(item.fspath).relative_to(ROOT / "tests").parts
        if parts and parts[0] in levels:
            item.add_marker(getattr(pytest.mark, parts[0]))


# Each test's phase reports, so that fixtures can tell whether the test failed.
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    doc = item.obj.__doc__ if isinstance(item, pytest.Function) else None
    figures_module.start_test(item.nodeid, doc)


_passed: set[str] = set()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each phase's report, so that fixtures can print logs when a test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    if report.when == "call" and report.passed:
        _passed.add(item.nodeid)
    return report


def pytest_sessionfinish() -> None:
    """The figures of the tests that passed, for the reliability report (testlib/figures.py)."""
    figures_module.write(_passed)


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
def start_server(tmp_path: Path):
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


@pytest.fixture
def failed(request: pytest.FixtureRequest) -> Callable[[], bool]:
    """Whether the test has failed so far (setup, call, teardown): fixtures show logs then."""
    return lambda: any(r.failed for r in request.node.stash.get(REPORTS, {}).values())


_names = itertools.count()


@pytest.fixture
def new_database(pg: Cluster):
    """A factory of fresh, empty databases; returns their libpq environment."""

    def make() -> dict[str, str]:
        name = f"t{os.getpid()}_{next(_names)}"
        pg.create_database(name)
        return pg.env(name)

    return make


@pytest.fixture
def db_env(new_database) -> dict[str, str]:
    return new_database()


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


@pytest.fixture(scope="session")
def sample_client(sample_env):
    return make_client(sample_env)


@pytest.fixture(scope="session")
def reference_client(reference_env):
    return make_client(reference_env)
