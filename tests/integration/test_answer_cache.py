"""The answer cache (rates/cache.py AnswerCache) never serves an answer from data that is gone."""

from __future__ import annotations

import time
from pathlib import Path

from rates import sample
from testlib.data import run_seed, seeded
from testlib.postgres import Cluster
from testlib.sample import JANUARY
from testlib.serve import get, wait_until


def _listening(cluster: Cluster, db: str) -> int:
    return int(
        cluster.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN rates_data' "
            f"AND datname = '{db}'"
        )
    )


def test_replaced_data_is_answered_at_once(own_pg: Cluster, start_server, tmp_path: Path) -> None:
    cluster = own_pg
    env = seeded(cluster.env())
    server = start_server({**env, "RATES_WORKERS": "1"})
    before = get(server.url + JANUARY)
    assert before[0] == 200
    wait_until(lambda: _listening(cluster, "postgres") == 1, "the worker to LISTEN")
    assert get(server.url + JANUARY) == before  # now from the cache

    other = tmp_path / "other.sql"
    sample.main(["--seed", "5", "--output", str(other)])
    result = run_seed({**env, "RATES_DUMP": str(other)}, "--replace")
    assert result.returncode == 0, result.stderr
    # The notification reaches the worker milliseconds after the commit: until then an
    # answer is as old as one to a request that came just before the commit.
    after = wait_until(
        lambda: (a := get(server.url + JANUARY)) != before and a, "the new answer", timeout=2
    )
    expected = cluster.psql(
        "SELECT count(*) FROM prices WHERE orig_code = 'CNSGH' AND dest_code = 'NLRTM' "
        "AND day BETWEEN '2016-01-01' AND '2016-01-03'"
    )
    assert after[0] == 200 and int(expected) > 0
    assert sum(d["count"] or 0 for d in after[1]["rates"]) == int(expected)
    assert after != before

    # A seed that fails changes nothing, and notifies nothing.
    bad = tmp_path / "bad.sql"
    bad.write_text(other.read_text().replace("\\.\n", "", 1))
    assert run_seed({**env, "RATES_DUMP": str(bad)}, "--replace").returncode == 1
    assert get(server.url + JANUARY) == after


def test_nothing_is_served_from_memory_while_the_database_is_down(
    own_pg: Cluster, start_server
) -> None:
    cluster = own_pg
    env = seeded(cluster.env())
    server = start_server({**env, "RATES_CONNECT_TIMEOUT": "2"})
    answer = get(server.url + JANUARY)
    wait_until(lambda: _listening(cluster, "postgres") >= 1, "a worker to LISTEN")
    for _ in range(4):  # both workers have it cached
        assert get(server.url + JANUARY) == answer
    cluster.stop()
    started = time.monotonic()
    assert get(server.url + JANUARY)[0] == 503
    assert time.monotonic() - started < 5
    cluster.start()
    wait_until(lambda: get(server.url + JANUARY) == answer, "answers again", timeout=30)
