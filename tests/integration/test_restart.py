"""The service survives a PostgreSQL restart without being restarted itself."""

from __future__ import annotations

import threading
import time

from rates import settings
from rates.pool import Database
from testlib.data import seeded
from testlib.postgres import Cluster
from testlib.sample import JANUARY
from testlib.serve import get, wait_until


def test_readyz_and_rates_recover_after_postgres_restart(own_pg: Cluster, start_server) -> None:
    # A server of its own: stopping the shared one would disturb other tests.
    cluster = own_pg
    server = start_server(seeded(cluster.env()))
    answer = get(server.url + JANUARY)
    assert answer[0] == 200
    pid = server.proc.pid

    cluster.stop()
    started = time.monotonic()
    status, body = get(server.url + "/readyz")
    assert time.monotonic() - started < 5, "a request hung while the database was down"
    assert status == 503
    assert body == {"error": "unavailable", "message": "database unavailable"}
    assert get(server.url + JANUARY)[0] == 503

    cluster.start()
    back = time.monotonic()
    wait_until(lambda: get(server.url + "/readyz")[0] == 200, "/readyz to recover", timeout=30)
    assert time.monotonic() - back < 5
    assert get(server.url + JANUARY) == answer
    assert server.proc.pid == pid and server.proc.poll() is None


def test_a_query_after_a_restart_answers_though_every_pooled_connection_died(
    own_pg: Cluster,
) -> None:
    """The retry after a broken connection connects anew: with two idle connections from
    before a restart, the next query must not meet the second dead one too."""
    db = Database(settings.load({**own_pg.env(), "RATES_POOL_SIZE": "2"}))
    try:
        # Two queries at once leave two idle connections to the server about to restart.
        barrier = threading.Barrier(2)

        def hold() -> None:
            barrier.wait()
            db.query("SELECT pg_sleep(0.2)")

        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert db.query(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = %s", ["client backend"]
        ) == [(2,)]
        own_pg.stop()
        own_pg.start()
        assert db.query("SELECT 1") == [(1,)]
    finally:
        db.close()
