"""Settings come only from the environment; a bad value is one line naming the variable."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

from rates import settings
from rates.settings import VARIABLES, SettingsError

ROOT = Path(__file__).resolve().parents[2]
BASE = {"PGDATABASE": "rates"}
PASSWORD = "s3cret"  # pragma: allowlist secret (test data)


def test_defaults() -> None:
    s = settings.load(BASE)
    assert (s.host, s.port, s.workers, s.threads, s.pool_size) == ("127.0.0.1", 3000, 2, 2, 4)
    assert (s.statement_timeout_ms, s.connect_timeout, s.max_range_days) == (5000, 5, 366)
    assert (s.access_log, s.dump, s.seed_wait, s.password) == (False, None, 30, None)


@pytest.mark.parametrize(
    ("raw", "seconds", "libpq"), [("0.3", 0.3, 2), ("2", 2, 2), ("2.5", 2.5, 3), ("600", 600, 600)]
)
def test_connect_timeout_takes_fractions_of_a_second(raw: str, seconds: float, libpq: int) -> None:
    """The pool keeps it to the millisecond; libpq, for the connections it opens itself
    (rates-seed's psql, the listening one), gets whole seconds and at least 2."""
    s = settings.load({**BASE, "RATES_CONNECT_TIMEOUT": raw})
    assert (s.connect_timeout, s.libpq_connect_timeout) == (seconds, libpq)
    assert s.connect_kwargs()["connect_timeout"] == libpq
    assert s.child_env({})["PGCONNECT_TIMEOUT"] == str(libpq)


@pytest.mark.parametrize("raw", ["0", "0.01", "601", "nan", "inf", "1s"])
def test_connect_timeout_out_of_range(raw: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings.load({**BASE, "RATES_CONNECT_TIMEOUT": raw})
    assert str(err.value) == (
        f"RATES_CONNECT_TIMEOUT: expected seconds, a number from 0.05 to 600, such as 5 or 0.3, "
        f"got {raw!r}"
    )


def test_values_are_parsed(tmp_path: Path) -> None:
    dump = tmp_path / "d.sql"
    dump.write_text("--\n")
    s = settings.load(
        {
            **BASE,
            "RATES_HOST": "0.0.0.0",
            "RATES_PORT": "8080",
            "RATES_WORKERS": "3",
            "RATES_ACCESS_LOG": "yes",
            "RATES_DUMP": str(dump),
            "RATES_MAX_RANGE_DAYS": "31",
        }
    )
    assert (s.host, s.port, s.workers, s.access_log, s.dump, s.max_range_days) == (
        "0.0.0.0",
        8080,
        3,
        True,
        dump,
        31,
    )


MALFORMED = {
    "PGHOST": " ",
    "PGPORT": "70000",
    "PGDATABASE": "  ",
    "PGUSER": " ",
    "PGPASSWORD": " ",
    "PGPASSWORD_FILE": "/nonexistent/password",
    "PGPASSFILE": "/nonexistent/pgpass",
    "RATES_HOST": " ",
    "RATES_PORT": "http",
    "RATES_WORKERS": "0",
    "RATES_THREADS": "many",
    "RATES_POOL_SIZE": "-1",
    "RATES_STATEMENT_TIMEOUT_MS": "1.5",
    "RATES_CONNECT_TIMEOUT": "0.01",
    "RATES_MAX_RANGE_DAYS": "0",
    "RATES_ACCESS_LOG": "maybe",
    "RATES_BUILD": "v1 with spaces",
    "RATES_DUMP": "/nonexistent/dump.sql",
    "RATES_SEED_WAIT": "forever",
}


def test_every_variable_has_a_malformed_case() -> None:
    assert set(MALFORMED) == {v.name for v in VARIABLES}


@pytest.mark.parametrize(("name", "value"), sorted(MALFORMED.items()))
def test_malformed_value_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings.load({**BASE, name: value})
    message = str(err.value)
    assert message.startswith(f"{name}: expected ")
    assert "\n" not in message


def test_build_is_the_version_and_the_label() -> None:
    version = importlib.metadata.version("rates")
    assert settings.load(BASE).build == version
    assert (
        settings.load({**BASE, "RATES_BUILD": "g1a2b3c.dirty"}).build == f"{version}+g1a2b3c.dirty"
    )


@pytest.mark.parametrize("label", ["-v1", "v1/2", "x" * 65, "v1\n"])
def test_build_label_is_refused_unless_plain(label: str) -> None:
    with pytest.raises(SettingsError, match=r"^RATES_BUILD: expected a label of 1 to 64 letters"):
        settings.load({**BASE, "RATES_BUILD": label})


def test_password_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as err:
        settings.load({**BASE, "PGPASSWORD": "  \t "})
    assert str(err.value) == "PGPASSWORD: expected a non-empty password, got <hidden>"


def test_required_database_name() -> None:
    with pytest.raises(SettingsError) as err:
        settings.load({})
    assert str(err.value) == (
        "PGDATABASE: required but not set; "
        "expected the name of the database that holds the rates data"
    )


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(f"{PASSWORD}\nignored\n")
    s = settings.load({**BASE, "PGPASSWORD_FILE": str(secret)})
    assert s.password == PASSWORD
    assert s.connect_kwargs()["password"] == PASSWORD
    env = s.child_env({"PGPASSWORD_FILE": str(secret), "PATH": "/bin", "PGHOST": "elsewhere"})
    assert env == {
        "PGPASSWORD": PASSWORD,
        "PATH": "/bin",
        "PGDATABASE": "rates",
        "PGCONNECT_TIMEOUT": "5",
        "PGAPPNAME": "rates-seed",
    }


def test_libpq_variables_reach_the_connection() -> None:
    s = settings.load(
        {
            "PGHOST": "db.example",
            "PGPORT": "6543",
            "PGDATABASE": "r",
            "PGUSER": "u",
            "PGPASSWORD": "p",
        }
    )
    kwargs = s.connect_kwargs()
    assert {k: kwargs[k] for k in ("host", "port", "dbname", "user", "password")} == {
        "host": "db.example",
        "port": "6543",
        "dbname": "r",
        "user": "u",
        "password": "p",
    }
    assert "passfile" not in kwargs


def test_password_and_password_file_conflict(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("a\n")
    with pytest.raises(SettingsError) as err:
        settings.load({**BASE, "PGPASSWORD": "b", "PGPASSWORD_FILE": str(secret)})
    assert str(err.value) == "PGPASSWORD_FILE: set either PGPASSWORD or PGPASSWORD_FILE, not both"


def test_empty_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("")
    with pytest.raises(SettingsError, match=r"^PGPASSWORD_FILE: .* got an empty file$"):
        settings.load({**BASE, "PGPASSWORD_FILE": str(secret)})


def test_env_example_documents_exactly_the_settings() -> None:
    """.env.example is the documented schema: same names, same defaults."""
    assignment = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
    documented: dict[str, tuple[bool, str]] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = assignment.match(line)
        if m:
            assert m.group(2) not in documented, f"{m.group(2)} is documented twice"
            documented[m.group(2)] = (m.group(1) is None, m.group(3))
    assert list(documented) == [v.name for v in VARIABLES]
    for var in VARIABLES:
        active, value = documented[var.name]
        if var.required:
            assert active and value, f"{var.name} is required: give it uncommented with an example"
        else:
            assert not active, f"{var.name} has a default: leave it commented out"
            assert value == (var.default or ""), f"{var.name}: .env.example says {value!r}"
