"""rates-seed: load the sample data, or the plain-SQL dump named by RATES_DUMP.

The load is one transaction, run by psql (plain pg_dump files are made for
psql: COPY blocks, meta-commands such as \\restrict). COMMIT is sent only
after the data is in, the indexes are built and the row counts match the
input, and only by a rates-seed that is still alive: if rates-seed or psql
dies at any point, psql's input ends without COMMIT and PostgreSQL rolls the
transaction back, leaving the database exactly as it was.

The sha256 of the input is recorded in the table rates_seed. The same input
again is a no-op. Without RATES_DUMP, data that rates-seed loaded before is
kept (the sample fills only a database with no rates data), so a stack keeps
serving its data until asked for other data; a different RATES_DUMP is
refused unless --replace is given.

Exit status: 0 loaded or nothing to do, 1 error (nothing changed),
2 bad configuration, 3 refused to replace other data.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from rates import sample
from rates import settings as settings_module
from rates.settings import Settings, SettingsError
from rates.sql import sql_file

TABLES = ("regions", "ports", "prices")
INDEX = "prices_orig_code_dest_code_day_idx"
# One rates-seed at a time per database: held (pg_advisory_lock) from reading
# what is loaded until the load is committed or rolled back.
LOCK_KEY = 0x7261746573  # "rates"
COMMIT_MARKER = "rates-seed: ready to commit"
COPY_LINE = re.compile(rb'COPY\s+(?:"?\w+"?\.)?"?(\w+)"?\s*(?:\([^)]*\))?\s+FROM\s+stdin;', re.I)


class SeedError(Exception):
    """Nothing was changed; str() is the one line to print."""


class Refused(SeedError):
    """Other data is loaded and --replace was not given."""


@dataclass(frozen=True)
class Source:
    path: Path
    label: str
    sha256: str
    rows: dict[str, int]


@dataclass(frozen=True)
class Loaded:
    sha256: str
    source: str
    loaded_at: str


def log(message: str) -> None:
    print(f"rates-seed: {message}", file=sys.stderr, flush=True)


def inspect(path: Path, label: str) -> Source:
    """Hash a dump and count the rows of each COPY block, without loading it."""
    digest = hashlib.sha256()
    rows: dict[str, int] = {}
    table: str | None = None
    with path.open("rb") as f:
        head = f.read(5)
        if head == b"":
            raise SeedError(
                f"{label} is empty; expected a plain-SQL pg_dump of {', '.join(TABLES)}"
            )
        if head == b"PGDMP":
            raise SeedError(
                f"{label} is a pg_dump archive (custom format); "
                "make a plain one with pg_dump --format=plain --no-owner"
            )
        digest.update(head)
        first = head + f.readline()
        digest.update(first[5:])
        for line in _lines(first, f, digest):
            if table is not None:
                if line.startswith(b"\\."):
                    table = None
                else:
                    rows[table] += 1
            elif line.startswith(b"COPY"):
                m = COPY_LINE.match(line)
                if m:
                    table = m.group(1).decode().lower()
                    rows.setdefault(table, 0)
    if table is not None:
        raise SeedError(f"{label} ends inside the data of table {table}: the file is truncated")
    missing = [t for t in TABLES if t not in rows]
    if missing:
        raise SeedError(
            f"{label} has no data for {', '.join(missing)}; "
            f"expected a plain-SQL pg_dump of {', '.join(TABLES)}"
        )
    return Source(path, label, digest.hexdigest(), {t: rows[t] for t in TABLES})


def _lines(first: bytes, f, digest):  # type: ignore[no-untyped-def]
    yield first
    for line in f:
        digest.update(line)
        yield line


def connect(settings: Settings, wait: int):  # type: ignore[no-untyped-def]
    """Connect, retrying for up to `wait` seconds while the server is not up yet."""
    deadline = time.monotonic() + wait
    while True:
        try:
            conn = psycopg2.connect("", **settings.connect_kwargs())
            conn.autocommit = True
            return conn
        except psycopg2.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown error"
            if time.monotonic() >= deadline:
                raise SeedError(
                    f"PostgreSQL did not accept a connection within {wait} s "
                    f"(RATES_SEED_WAIT): {reason}"
                ) from None
            time.sleep(0.5)


def current(conn) -> tuple[Loaded | None, bool]:  # type: ignore[no-untyped-def]
    """What rates-seed loaded before (if anything), and whether the tables exist at all."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT to_regclass('rates_seed') IS NOT NULL, "
            "bool_or(to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) t",
            (list(TABLES),),
        )
        has_meta, has_tables = cur.fetchone()
        if not has_meta:
            return None, bool(has_tables)
        cur.execute("SELECT sha256, source, loaded_at::text FROM rates_seed")
        row = cur.fetchone()
    return (Loaded(*row) if row else None), bool(has_tables)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def load_script(source: Source) -> str:
    """The psql input: everything but the COMMIT, which run_load() sends last."""
    post_load = sql_file("post-load.sql")
    # Only table names from TABLES and integers counted by inspect() are
    # interpolated; the one free text (the label) goes through _quote().
    checks = "\n".join(
        f"  SELECT count(*) INTO n FROM {t};\n"  # noqa: S608
        f"  IF n <> {source.rows[t]} THEN\n"
        f"    RAISE EXCEPTION 'rates-seed: % rows in {t} after loading, the input has "
        f"{source.rows[t]}', n;\n  END IF;"
        for t in TABLES
    )
    return f"""\\set ON_ERROR_STOP on
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE TABLE IF NOT EXISTS rates_seed (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    sha256 text NOT NULL,
    source text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    regions bigint NOT NULL,
    ports bigint NOT NULL,
    prices bigint NOT NULL
);
DROP TABLE IF EXISTS prices, ports, regions CASCADE;
\\i {_quote(str(source.path))}
-- A dump may set search_path and other settings for the session: undo them.
RESET ALL;
SET LOCAL client_min_messages = warning;
{post_load}
DO $$ DECLARE n bigint; BEGIN
{checks}
  IF to_regclass('{INDEX}') IS NULL THEN
    RAISE EXCEPTION 'rates-seed: index {INDEX} is missing after loading';
  END IF;
END $$;
DELETE FROM rates_seed;
INSERT INTO rates_seed (sha256, source, regions, ports, prices)
VALUES ({_quote(source.sha256)}, {_quote(source.label)}, {source.rows["regions"]},
        {source.rows["ports"]}, {source.rows["prices"]});
\\echo {COMMIT_MARKER}
"""  # noqa: S608


def run_load(settings: Settings, source: Source) -> None:
    env = settings.child_env(os.environ)
    with tempfile.TemporaryFile() as errors:
        # psql from PATH, like every libpq tool; the Nix package puts its own there.
        psql = subprocess.Popen(  # noqa: S603
            ["psql", "-X", "-q", "-o", os.devnull, "--no-password"],  # noqa: S607
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
            text=True,
        )
        assert psql.stdin is not None and psql.stdout is not None
        psql.stdin.write(load_script(source))
        psql.stdin.flush()
        ready = any(line.rstrip("\n") == COMMIT_MARKER for line in psql.stdout)
        if ready:
            psql.stdin.write("COMMIT;\n")
        psql.stdin.close()
        code = psql.wait()
        if not ready or code != 0:
            errors.seek(0)
            raise SeedError(f"loading {source.label} failed: {_psql_error(errors.read().decode())}")


def _psql_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "ERROR:" in line or "FATAL:" in line or "error:" in line:
            return line.split("ERROR:", 1)[-1].strip() if "ERROR:" in line else line
    return lines[-1] if lines else "psql stopped without a message"


def seed(settings: Settings, replace: bool) -> None:
    with ExitStack() as stack:
        if settings.dump is not None:
            source = inspect(settings.dump, str(settings.dump))
        else:
            tmp = stack.enter_context(
                tempfile.NamedTemporaryFile(
                    "w", suffix=".sql", prefix="rates-sample-", encoding="utf-8"
                )
            )
            sample.write_dump(tmp)
            tmp.flush()
            source = inspect(Path(tmp.name), f"the sample data ({sample.DEFAULT_PRICES} prices)")
        conn = stack.enter_context(closing(connect(settings, settings.seed_wait)))
        with conn.cursor() as cur:
            # Released when this connection closes, also when rates-seed is killed.
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        loaded, has_tables = current(conn)
        if loaded is not None and loaded.sha256 == source.sha256:
            log(
                f"nothing to do: the database already holds {loaded.source} "
                f"(sha256 {loaded.sha256[:12]}), loaded {loaded.loaded_at}"
            )
            return
        if loaded is not None and settings.dump is None and not replace:
            # Nobody asked for other data: keep what was loaded, whatever it was.
            log(
                f"nothing to do: keeping {loaded.source} (sha256 {loaded.sha256[:12]}): "
                "RATES_DUMP is not set; to load other data: RATES_DUMP=FILE rates-seed --replace"
            )
            return
        if (loaded is not None or has_tables) and not replace:
            # One short line: the local stack shows it in its terminal UI, at 100
            # columns, as the reason it stopped (stack/about).
            what = (
                f"{loaded.source} (sha256 {loaded.sha256[:12]})"
                if loaded
                else "tables ports, regions and prices that rates-seed did not load"
            )
            raise Refused(
                f"the database holds {what}; to load {source.label} instead: rates-seed --replace"
            )
        started = time.monotonic()
        log(f"loading {source.label} (sha256 {source.sha256[:12]})")
        run_load(settings, source)
        r = source.rows
        log(
            f"loaded {r['regions']} regions, {r['ports']} ports and {r['prices']} prices "
            f"in {time.monotonic() - started:.1f} s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="rates-seed",
        description="Load the sample data, or the plain-SQL pg_dump named by RATES_DUMP, into "
        "the database named by the PG* variables. Safe to run again: the same input is a no-op.",
    )
    parser.add_argument(
        "--replace", action="store_true", help="replace data that came from a different input"
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_module.load()
    except SettingsError as exc:
        log(str(exc))
        sys.exit(2)
    try:
        seed(settings, args.replace)
    except Refused as exc:
        log(f"refused: {exc}")
        sys.exit(3)
    except SeedError as exc:
        log(f"{exc}; the database is unchanged")
        sys.exit(1)


if __name__ == "__main__":
    main()
