"""Settings from the environment: one typed object, built in one place.

The database is configured with libpq's own variables (PGHOST, PGPORT, ...),
which libpq itself reads, so psql and the service always agree. They are
validated here only so that a bad value stops start-up with one clear line.
The service's own settings share the RATES_ prefix. `.env.example` documents
every variable in VARIABLES, and a test keeps the two in step.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A variable is missing or malformed; str() is the one line to print."""


@dataclass(frozen=True)
class Variable:
    name: str
    parse: Callable[[str], Any]
    expects: str  # completes "NAME: expected ..."
    default: str | None  # None: optional with no default, unless required
    required: bool = False


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip(), 10)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parse


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError(raw)
    return raw


def _seconds(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw.strip())
        if not low <= value <= high:  # also refuses nan
            raise ValueError(raw)
        return value

    return parse


def _file(raw: str) -> str:
    if not Path(raw).is_file() or not os.access(raw, os.R_OK):
        raise ValueError(raw)
    return raw


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _label(raw: str) -> str:
    if not _LABEL.fullmatch(raw):
        raise ValueError(raw)
    return raw


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_PORT = "an integer from 1 to 65535"

VARIABLES: tuple[Variable, ...] = (
    # libpq: read by libpq itself; listed so that they are validated and documented.
    Variable("PGHOST", _text, "a host name, an IP address or a socket directory", None),
    Variable("PGPORT", _integer(1, 65535), _PORT, None),
    Variable(
        "PGDATABASE",
        _text,
        "the name of the database that holds the rates data",
        None,
        required=True,
    ),
    Variable("PGUSER", _text, "a PostgreSQL role name", None),
    Variable("PGPASSWORD", _text, "a non-empty password", None),
    Variable("PGPASSWORD_FILE", _file, "a readable file whose first line is the password", None),
    Variable(
        "PGPASSFILE", _file, "a readable libpq password file (host:port:db:user:password)", None
    ),
    # The service.
    Variable(
        "RATES_HOST", _text, "an address to listen on, such as 127.0.0.1 or 0.0.0.0", "127.0.0.1"
    ),
    Variable("RATES_PORT", _integer(1, 65535), _PORT, "3000"),
    Variable("RATES_WORKERS", _integer(1, 64), "an integer from 1 to 64", "2"),
    # 2: on 2 cores, fewer threads contending for each worker's GIL gave a shorter tail at
    # the same throughput than 4 (docs/performance.md, the sweep and bench/notes.md).
    Variable("RATES_THREADS", _integer(1, 64), "an integer from 1 to 64", "2"),
    Variable("RATES_POOL_SIZE", _integer(1, 100), "an integer from 1 to 100", "4"),
    Variable(
        "RATES_STATEMENT_TIMEOUT_MS",
        _integer(1, 600_000),
        "milliseconds, an integer from 1 to 600000",
        "5000",
    ),
    # Seconds, and fractions of one: behind a load balancer that gives up on a host after
    # a second (nix/hosts/cluster/haproxy.cfg), the API must give up on its database
    # sooner. libpq's own connect_timeout cannot (whole seconds, at least 2), so the pool
    # connects without blocking and keeps the time itself (rates/pool.py).
    Variable(
        "RATES_CONNECT_TIMEOUT",
        _seconds(0.05, 600),
        "seconds, a number from 0.05 to 600, such as 5 or 0.3",
        "5",
    ),
    Variable("RATES_MAX_RANGE_DAYS", _integer(1, 3_660_000), "a positive number of days", "366"),
    Variable("RATES_ACCESS_LOG", _boolean, "true or false", "false"),
    Variable(
        "RATES_BUILD",
        _label,
        "a label of 1 to 64 letters, digits, '.', '_' or '-', such as a git revision",
        None,
    ),
    # The seed.
    Variable("RATES_DUMP", _file, "a readable plain-SQL pg_dump file", None),
    Variable("RATES_SEED_WAIT", _integer(0, 3600), "seconds, an integer from 0 to 3600", "30"),
)


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    workers: int
    threads: int
    pool_size: int
    statement_timeout_ms: int
    connect_timeout: float
    max_range_days: int
    access_log: bool
    dump: Path | None
    seed_wait: int
    # The package version, and "+RATES_BUILD" when that is set: which release a
    # host runs, shown by /healthz (the Rates-Build header).
    build: str
    # libpq's variables as given (PGHOST=..., ...), passed on explicitly so
    # that settings built from any mapping reach the database they name.
    libpq_env: dict[str, str]
    # The password from PGPASSWORD or PGPASSWORD_FILE; never logged.
    password: str | None

    @property
    def libpq_connect_timeout(self) -> int:
        """RATES_CONNECT_TIMEOUT as libpq's connect_timeout: whole seconds, at least 2."""
        return max(2, math.ceil(self.connect_timeout))

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for psycopg2.connect on top of libpq's own PG* variables."""
        options = (
            f"-c statement_timeout={self.statement_timeout_ms}"
            # A session left open in a transaction would block DDL on prices;
            # the service never leaves one open, and the server enforces it.
            f" -c idle_in_transaction_session_timeout={max(self.statement_timeout_ms, 10_000)}"
        )
        kwargs: dict[str, Any] = {
            # For the connections libpq opens by itself (the listening one, rates-seed's);
            # the pool keeps RATES_CONNECT_TIMEOUT to the millisecond.
            "connect_timeout": self.libpq_connect_timeout,
            "application_name": "rates",
            "options": options,
            # Notice a dead server on idle pooled connections in seconds, not hours.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        for name, keyword in _LIBPQ.items():
            if name in self.libpq_env:
                kwargs[keyword] = self.libpq_env[name]
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    def child_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Environment for a libpq child process (psql) that reaches the same database."""
        env = {k: v for k, v in environ.items() if k not in _LIBPQ and k != "PGPASSWORD_FILE"}
        env.update(self.libpq_env)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env["PGCONNECT_TIMEOUT"] = str(self.libpq_connect_timeout)
        env["PGAPPNAME"] = "rates-seed"
        return env


# libpq variable -> connection keyword (PGPASSWORD is handled as `password`).
_LIBPQ = {
    "PGHOST": "host",
    "PGPORT": "port",
    "PGDATABASE": "dbname",
    "PGUSER": "user",
    "PGPASSFILE": "passfile",
}


def _read(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = environ.get(var.name)
        if raw is None or raw == "":
            if var.required:
                raise SettingsError(f"{var.name}: required but not set; expected {var.expects}")
            raw = var.default
        if raw is None:
            values[var.name] = None
            continue
        try:
            values[var.name] = var.parse(raw)
        except ValueError:
            shown = "<hidden>" if var.name == "PGPASSWORD" else repr(raw)
            raise SettingsError(f"{var.name}: expected {var.expects}, got {shown}") from None
    return values


def package_version() -> str:
    """The installed package's version; "unknown" when run from a tree that is not installed."""
    try:
        return importlib.metadata.version("rates")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from `environ` (default: os.environ), or raise SettingsError."""
    environ = os.environ if environ is None else environ
    v = _read(environ)
    if v["PGPASSWORD"] is not None and v["PGPASSWORD_FILE"] is not None:
        raise SettingsError("PGPASSWORD_FILE: set either PGPASSWORD or PGPASSWORD_FILE, not both")
    password = v["PGPASSWORD"]
    if v["PGPASSWORD_FILE"] is not None:
        lines = Path(v["PGPASSWORD_FILE"]).read_text(encoding="utf-8").splitlines()
        password = lines[0] if lines else ""
        if not password:
            raise SettingsError(
                "PGPASSWORD_FILE: expected a readable file whose first line is the password, "
                "got an empty file"
            )
    return Settings(
        host=v["RATES_HOST"],
        port=v["RATES_PORT"],
        workers=v["RATES_WORKERS"],
        threads=v["RATES_THREADS"],
        pool_size=v["RATES_POOL_SIZE"],
        statement_timeout_ms=v["RATES_STATEMENT_TIMEOUT_MS"],
        connect_timeout=v["RATES_CONNECT_TIMEOUT"],
        max_range_days=v["RATES_MAX_RANGE_DAYS"],
        access_log=v["RATES_ACCESS_LOG"],
        dump=Path(v["RATES_DUMP"]) if v["RATES_DUMP"] else None,
        seed_wait=v["RATES_SEED_WAIT"],
        build=package_version() + (f"+{v['RATES_BUILD']}" if v["RATES_BUILD"] else ""),
        libpq_env={name: environ[name] for name in _LIBPQ if v[name] is not None},
        password=password,
    )
