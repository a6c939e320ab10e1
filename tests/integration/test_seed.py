"""rates-seed: atomic, idempotent, safe and verified, run as the real command."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rates import sample
from testlib.data import REFERENCE_DUMP, needs_reference_dump, run_seed
from testlib.postgres import Cluster, free_port

# ../shared/data/README.md gives it; a digest, not a secret.
REFERENCE_SHA256 = (
    "025b432e24f6075d82c7259b48278ffc7c8eeae40778475e19573c51e588ce45"  # pragma: allowlist secret
)


def sample_dump_bytes() -> bytes:
    """The sample dump as rates-seed writes and hashes it."""
    out = io.StringIO()
    sample.write_dump(out)
    return out.getvalue().encode()


def state(pg: Cluster, env: dict[str, str]) -> tuple[str, ...]:
    """What is loaded, down to the table's identity: a reload would change its oid."""
    db = env["PGDATABASE"]
    if pg.psql("SELECT to_regclass('rates_seed') IS NULL", db) == "t":
        tables = pg.psql(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('ports', 'regions', 'prices')", db
        )
        return ("nothing seeded", tables)
    return (
        pg.psql("SELECT sha256 || ' ' || source || ' ' || loaded_at FROM rates_seed", db),
        pg.psql("SELECT 'prices'::regclass::oid", db),
        pg.psql("SELECT count(*) FROM prices", db),
        pg.psql("SELECT count(*) FROM ports", db),
        pg.psql("SELECT count(*) FROM regions", db),
    )


@pytest.fixture(scope="module")
def big_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large enough that loading takes a while, so it can be killed halfway."""
    path = tmp_path_factory.mktemp("dumps") / "big.sql"
    sample.main(["--prices", "1500000", "--seed", "1", "--output", str(path)])
    return path


def test_first_run_loads_sample(pg: Cluster, db_env: dict[str, str]) -> None:
    result = run_seed(db_env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("rates-seed: loading the sample data (57000 prices) (sha256 ")
    assert lines[1].startswith("rates-seed: loaded 20 regions, 150 ports and 57000 prices in ")
    db = db_env["PGDATABASE"]
    assert pg.psql("SELECT count(*) FROM prices", db) == "57000"
    assert pg.psql(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'prices_orig_code_dest_code_day_idx'", db
    ) == (
        "CREATE INDEX prices_orig_code_dest_code_day_idx ON public.prices USING btree "
        "(orig_code, dest_code, day) INCLUDE (price)"
    )
    # Foreign keys from the schema hold.
    assert pg.psql("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", db) == "4"


def test_second_run_is_a_no_op(pg: Cluster, db_env: dict[str, str]) -> None:
    assert run_seed(db_env).returncode == 0
    before = state(pg, db_env)
    again = run_seed(db_env)
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith(
        "rates-seed: nothing to do: the database already holds "
        "the sample data (57000 prices) (sha256 "
    )
    assert state(pg, db_env) == before


def test_reference_dump_loads_and_is_recorded(pg: Cluster, db_env: dict[str, str]) -> None:
    needs_reference_dump()
    result = run_seed({**db_env, "RATES_DUMP": str(REFERENCE_DUMP)})
    assert result.returncode == 0, result.stderr
    assert "loaded 20 regions, 143 ports and 56689 prices" in result.stderr
    assert pg.psql("SELECT sha256 FROM rates_seed", db_env["PGDATABASE"]) == REFERENCE_SHA256


def test_different_input_is_refused_without_replace(
    pg: Cluster, db_env: dict[str, str], tmp_path: Path
) -> None:
    assert run_seed(db_env).returncode == 0
    before = state(pg, db_env)
    other = tmp_path / "other.sql"
    sample.main(["--prices", "1000", "--output", str(other)])
    refused = run_seed({**db_env, "RATES_DUMP": str(other)})
    assert refused.returncode == 3
    sample_sha = hashlib.sha256(sample_dump_bytes()).hexdigest()[:12]
    assert refused.stderr == (
        f"rates-seed: refused: the database holds the sample data (57000 prices) (sha256"
        f" {sample_sha}); to load {other} instead: rates-seed --replace\n"
    )
    assert state(pg, db_env) == before

    replaced = run_seed({**db_env, "RATES_DUMP": str(other)}, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert pg.psql("SELECT count(*) FROM prices", db_env["PGDATABASE"]) == "1000"


def test_without_dump_the_loaded_data_is_kept(
    pg: Cluster, db_env: dict[str, str], tmp_path: Path
) -> None:
    """A stack started again without RATES_DUMP keeps serving the dump it holds."""
    dump = tmp_path / "mine.sql"
    sample.main(["--prices", "1000", "--output", str(dump)])
    assert run_seed({**db_env, "RATES_DUMP": str(dump)}).returncode == 0
    before = state(pg, db_env)
    sha256 = hashlib.sha256(dump.read_bytes()).hexdigest()
    kept = run_seed(db_env)
    assert (kept.returncode, kept.stderr) == (
        0,
        f"rates-seed: nothing to do: keeping {dump} (sha256 {sha256[:12]}): RATES_DUMP is"
        " not set; to load other data: RATES_DUMP=FILE rates-seed --replace\n",
    )
    assert state(pg, db_env) == before

    # Asked for, the sample replaces it.
    replaced = run_seed(db_env, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert pg.psql("SELECT count(*) FROM prices", db_env["PGDATABASE"]) == "57000"


def test_tables_it_did_not_load_are_not_replaced(pg: Cluster, db_env: dict[str, str]) -> None:
    db = db_env["PGDATABASE"]
    pg.psql("CREATE TABLE prices (x int); INSERT INTO prices VALUES (1)", db)
    refused = run_seed(db_env)
    assert refused.returncode == 3
    assert refused.stderr == (
        "rates-seed: refused: the database holds tables ports, regions and prices that"
        " rates-seed did not load; to load the sample data (57000 prices) instead:"
        " rates-seed --replace\n"
    )
    assert pg.psql("SELECT x FROM prices", db) == "1"


def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _loading(pg: Cluster, db: str) -> bool:
    return (
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rates-seed' "
            f"AND datname = '{db}' AND query ILIKE 'COPY prices%'"
        )
        == "1"
    )


def _gone(pg: Cluster, db: str) -> bool:
    return (
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rates-seed' "
            f"AND datname = '{db}'"
        )
        == "0"
    )


@pytest.mark.parametrize("victim", ["rates-seed", "psql"])
def test_sigkill_mid_load_leaves_the_database_unchanged(
    pg: Cluster, db_env: dict[str, str], big_dump: Path, victim: str
) -> None:
    assert run_seed(db_env).returncode == 0
    before = state(pg, db_env)
    db = db_env["PGDATABASE"]
    with subprocess.Popen(
        ["rates-seed", "--replace"],
        env={"PATH": os.environ["PATH"], **db_env, "RATES_DUMP": str(big_dump)},
        stderr=subprocess.DEVNULL,
    ) as proc:
        _wait_for(lambda: _loading(pg, db), "the COPY into prices to start")
        if victim == "rates-seed":
            proc.kill()
        else:
            psql = subprocess.run(
                ["pgrep", "-P", str(proc.pid), "psql"], capture_output=True, text=True, check=True
            ).stdout.split()
            assert len(psql) == 1
            os.kill(int(psql[0]), signal.SIGKILL)
        code = proc.wait(timeout=60)
    assert code == (-signal.SIGKILL if victim == "rates-seed" else 1)
    _wait_for(lambda: _gone(pg, db), "the loading session to end")
    assert state(pg, db_env) == before


def test_a_second_seed_waits_for_the_first(pg: Cluster, db_env: dict[str, str]) -> None:
    """Two seeds at once: one loads, the other then finds the data there."""
    env = {"PATH": os.environ["PATH"], **db_env}
    procs = [
        subprocess.Popen(["rates-seed"], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sorted("nothing to do" in o for o in outputs) == [False, True], outputs
    assert pg.psql("SELECT count(*) FROM prices", db_env["PGDATABASE"]) == "57000"


BAD_DUMPS = {
    "empty": ("", "is empty; expected a plain-SQL pg_dump of regions, ports, prices"),
    "not sql": (
        "this is not SQL\n",
        "has no data for regions, ports, prices; expected a plain-SQL pg_dump of regions,"
        " ports, prices",
    ),
    "other schema": (
        "CREATE TABLE things (id int);\nCOPY things (id) FROM stdin;\n1\n\\.\n",
        "has no data for regions, ports, prices",
    ),
    "truncated": (
        "CREATE TABLE regions (slug text);\nCOPY regions (slug) FROM stdin;\na\n",
        "ends inside the data of table regions: the file is truncated",
    ),
    "custom format": (
        "PGDMP\x01\x0e\x00",
        "is a pg_dump archive (custom format); make a plain "
        "one with pg_dump --format=plain --no-owner",
    ),
    # Looks right to a quick read, fails in PostgreSQL: rolled back whole.
    "bad rows": (
        "CREATE TABLE regions (slug text, name text, parent_slug text);\n"
        "CREATE TABLE ports (code text, name text, parent_slug text);\n"
        "CREATE TABLE prices (orig_code text, dest_code text, day date, price integer);\n"
        "COPY regions (slug, name, parent_slug) FROM stdin;\nr\tR\t\\N\n\\.\n"
        "COPY ports (code, name, parent_slug) FROM stdin;\nAAAAA\tA\tr\n\\.\n"
        "COPY prices (orig_code, dest_code, day, price) FROM stdin;\n"
        "AAAAA\tAAAAA\tnot-a-day\t1\n\\.\n",
        'loading {path} failed: invalid input syntax for type date: "not-a-day"',
    ),
    "wrong columns": (
        "CREATE TABLE regions (slug text);\nCREATE TABLE ports (code text);\n"
        "CREATE TABLE prices (code text);\n"
        "COPY regions (slug) FROM stdin;\nr\n\\.\nCOPY ports (code) FROM stdin;\np\n\\.\n"
        "COPY prices (code) FROM stdin;\nx\n\\.\n",
        'loading {path} failed: column "orig_code" does not exist',
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_DUMPS))
def test_bad_dump_fails_loudly_and_changes_nothing(
    pg: Cluster, db_env: dict[str, str], tmp_path: Path, kind: str
) -> None:
    assert run_seed(db_env).returncode == 0
    before = state(pg, db_env)
    content, message = BAD_DUMPS[kind]
    dump = tmp_path / "bad.sql"
    dump.write_text(content)
    result = run_seed({**db_env, "RATES_DUMP": str(dump)}, "--replace")
    assert result.returncode == 1
    # At most a progress line, then the error: one line, no traceback.
    lines = result.stderr.splitlines()
    assert len(lines) <= 2 and all(line.startswith("rates-seed: ") for line in lines), lines
    assert message.format(path=dump) in lines[-1]
    assert lines[-1].endswith("; the database is unchanged")
    assert state(pg, db_env) == before


def test_missing_dump_is_a_configuration_error(db_env: dict[str, str]) -> None:
    result = run_seed({**db_env, "RATES_DUMP": "/nonexistent/rates.sql"})
    assert (result.returncode, result.stderr) == (
        2,
        "rates-seed: RATES_DUMP: expected a readable plain-SQL pg_dump file, "
        "got '/nonexistent/rates.sql'\n",
    )


def test_gives_up_waiting_for_the_database(db_env: dict[str, str]) -> None:
    env = {**db_env, "PGPORT": str(free_port()), "RATES_SEED_WAIT": "2"}
    started = time.monotonic()
    result = run_seed(env)
    took = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.startswith(
        "rates-seed: PostgreSQL did not accept a connection within 2 s (RATES_SEED_WAIT): "
    )
    assert result.stderr.count("\n") == 1
    assert took < 30, f"waited {took:.1f} s for a 2 s limit"


def test_waits_for_a_database_that_comes_up(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        env = {**cluster.env(), "RATES_SEED_WAIT": "60"}
        proc = subprocess.Popen(
            ["rates-seed"],
            env={"PATH": os.environ["PATH"], **env},
            stderr=subprocess.PIPE,
            text=True,
        )
        cluster.start()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "loaded 20 regions, 150 ports and 57000 prices" in err
    finally:
        cluster.destroy()
