"""The service survives a PostgreSQL restart without being restarted itself."""

from __future__ import annotations

import time

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
