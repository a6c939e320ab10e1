"""Faults under load: the database goes away, the service reloads, the seed is killed,
the connection limit is reached. Real PostgreSQL, real rates-serve, load from a second
process on loopback. Each test prints the figures the README's reliability section quotes
(run with `pytest -m faults -s` to see them).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import rates.app
from rates import sample
from testlib.data import run_seed, seeded
from testlib.figures import figures
from testlib.postgres import Cluster
from testlib.sample import JANUARY, JANUARY_BODY
from testlib.serve import Load, Server, get, outage_figures, settings_of, wait_until


@pytest.fixture
def cluster(own_pg: Cluster) -> Cluster:
    return own_pg


@pytest.fixture
def served(cluster: Cluster, start_server) -> Server:
    return start_server({**seeded(cluster.env()), "RATES_CONNECT_TIMEOUT": "2"})


def test_postgres_outage_under_load(cluster: Cluster, served: Server, tmp_path: Path) -> None:
    """Down for 10 s: quick 503s during, then correct answers, no API restart."""
    pid = served.proc.pid
    load = Load([served.url + JANUARY], tmp_path / "load.jsonl", concurrency=4)
    try:
        time.sleep(2)  # the scenario: traffic flows before the outage
        stopping = time.time()
        cluster.stop()
        down = time.time()  # the server has exited: the stop waits for it
        time.sleep(10)  # the scenario: a 10 s outage
        up = time.time()
        cluster.start()
        wait_until(lambda: get(served.url + "/readyz", 2)[0] == 200, "/readyz after the outage")
        time.sleep(3)  # the scenario: traffic flows after recovery
    finally:
        records = load.stop()

    assert get(served.url + JANUARY) == (200, JANUARY_BODY)
    assert served.proc.pid == pid and served.proc.poll() is None
    api = settings_of(pid)
    figures("postgres outage 10 s", **outage_figures(records, stopping, down, up, api))


WORKERS = 2  # RATES_WORKERS' default


def _workers(master: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_reload_under_load_loses_no_request(cluster: Cluster, tmp_path: Path) -> None:
    """SIGHUP with new code on disk: new workers serve it, and not one request fails."""
    # A copy of the package that this test may change, first on the import path.
    code = tmp_path / "code"
    package = Path(rates.app.__file__).parent
    shutil.copytree(package, code / "rates", ignore=shutil.ignore_patterns("__pycache__"))
    if not (package / "db").is_dir():  # the source tree: db/ is beside rates/
        shutil.copytree(package.parent / "db", code / "rates" / "db")
    env = seeded(cluster.env())
    server = Server({**env, "PYTHONPATH": str(code)}, tmp_path / "serve.log")
    try:
        server.wait_ready("/readyz")
        wait_until(lambda: len(_workers(server.proc.pid)) == WORKERS, "both workers")
        assert get(server.url + "/") == (200, {"message": "Hello world!"})
        load = Load([server.url + JANUARY], tmp_path / "load.jsonl", concurrency=4)
        try:
            app = code / "rates" / "app.py"
            app.write_text(app.read_text().replace("Hello world!", "Hello, upgraded world!"))
            reloads = 3
            for _ in range(reloads):
                time.sleep(1)  # the scenario: traffic flows between reloads
                old = _workers(server.proc.pid)
                server.proc.send_signal(signal.SIGHUP)

                def renewed(old: set[int] = old) -> bool:
                    now = _workers(server.proc.pid)
                    return len(now) == WORKERS and not now & old

                wait_until(renewed, "a full set of new workers")
            assert get(server.url + "/") == (200, {"message": "Hello, upgraded world!"})
            time.sleep(1)
        finally:
            records = load.stop()
    finally:
        assert server.stop() == 0
    statuses = Counter(r["status"] for r in records)
    assert statuses == {200: len(records)}, statuses
    figures(
        "reload under load",
        reloads=reloads,
        requests=len(records),
        failed=len(records) - statuses[200],
    )


@pytest.fixture(scope="module")
def new_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "new.sql"
    sample.main(["--prices", "400000", "--seed", "3", "--output", str(path)])
    return path


def _loaded(pg: Cluster, db: str) -> tuple[str, str, str]:
    return (
        pg.psql("SELECT sha256 FROM rates_seed", db),
        pg.psql("SELECT count(*) FROM prices", db),
        pg.psql(
            "SELECT count(*) FROM pg_indexes WHERE indexname = "
            "'prices_orig_code_dest_code_day_idx'",
            db,
        ),
    )


def test_seed_killed_at_random_points(cluster: Cluster, new_data: Path) -> None:
    """Killed anywhere, the seed leaves either all the old data or all the new."""
    cluster.create_database("timing")
    env = {**cluster.env("timing"), "RATES_DUMP": str(new_data)}
    started = time.monotonic()
    assert run_seed(env).returncode == 0
    duration = time.monotonic() - started
    new = _loaded(cluster, "timing")

    rng = random.Random(20161)
    outcomes: Counter[str] = Counter()
    for trial in range(8):
        db = f"kill{trial}"
        cluster.create_database(db)
        old_env = seeded(cluster.env(db))
        old = _loaded(cluster, db)
        delay = rng.uniform(0, duration * 1.2)
        with subprocess.Popen(
            ["rates-seed", "--replace"],
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ["PATH"], **old_env, "RATES_DUMP": str(new_data)},
        ) as proc:
            time.sleep(delay)  # the scenario: a kill at a random point
            proc.kill()
        wait_until(
            lambda db=db: (
                cluster.psql(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rates-seed' "
                    f"AND datname = '{db}'"
                )
                == "0"
            ),
            "the seed's session to end",
        )
        now = _loaded(cluster, db)
        assert now in (old, new), f"trial {trial} (kill after {delay:.2f} s): {now}"
        outcomes["old" if now == old else "new"] += 1
    figures(
        "seed killed at random points",
        trials=8,
        full_load_s=round(duration, 2),
        left_old=outcomes["old"],
        left_new=outcomes["new"],
        partial=0,
    )


def test_connection_limit_reached(tmp_path: Path) -> None:
    """Every connection slot taken by others: 503 with a reason, then recovery."""
    cluster = Cluster(tmp_path / "pg", conf="max_connections = 8\n")
    cluster.start()
    blockers: list = []
    server = None
    try:
        env = seeded(cluster.env())
        cluster.psql("CREATE ROLE app LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO app")
        server = Server(
            {**env, "PGUSER": "app", "RATES_CONNECT_TIMEOUT": "2"}, tmp_path / "serve.log"
        )
        server.wait_ready()  # /healthz: the service holds no connection yet
        # 8 slots, 3 reserved for superusers: 5 ordinary clients fill it.
        for _ in range(5):
            blockers.append(psycopg2.connect("", **{**_libpq(env), "user": "app"}))
        started = time.monotonic()
        status, body = get(server.url + "/readyz")
        took = time.monotonic() - started
        assert (status, body) == (503, {"error": "unavailable", "message": "database unavailable"})
        # The driver's words are for the operator: in the service's log, not the answer.
        log = server.log()
        assert "connection slots" in log or "too many clients" in log, log
        assert get(server.url + JANUARY)[0] == 503
        for conn in blockers:
            conn.close()
        blockers.clear()
        freed = time.monotonic()
        wait_until(lambda: get(server.url + "/readyz", 2)[0] == 200, "recovery")
        recovery = time.monotonic() - freed
        assert get(server.url + JANUARY) == (200, JANUARY_BODY)
        figures(
            "connection limit reached",
            answer_ms=round(took * 1000, 1),
            recovery_after_release_s=round(recovery, 2),
        )
    finally:
        for conn in blockers:
            conn.close()
        if server is not None:
            server.stop()
        cluster.destroy()


def _libpq(env: dict[str, str]) -> dict[str, Any]:
    return {"host": env["PGHOST"], "port": env["PGPORT"], "dbname": env["PGDATABASE"]}
