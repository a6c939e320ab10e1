"""The whole local stack under process-compose: start, serve, survive, stop, start again.

One recipe (the fixtures in conftest.py): free ports and a state directory of
its own, wait for real readiness, exercise, stop, prove nothing is left; the
processes' output is printed when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import pytest

from testlib.data import CONTRACT, REFERENCE_DUMP
from testlib.figures import figures
from testlib.sample import JANUARY
from testlib.serve import Load, check_contract, get, outage_figures, settings_of, wait_until
from testlib.stack import PROCESS_COMPOSE_MISSING, Stack, port_closed

if shutil.which("process-compose") is None:
    pytest.skip(PROCESS_COMPOSE_MISSING, allow_module_level=True)


def test_stack_lifecycle(stack: Stack) -> None:
    stack.up()

    # The contract, over HTTP, on the reference dump (the sample when absent).
    if REFERENCE_DUMP.is_file():
        check_contract(stack.url, json.loads(CONTRACT.read_text()))
    answer = get(stack.url + JANUARY)
    assert answer[0] == 200

    # PostgreSQL restarts under the API, which recovers by itself.
    api_before = stack.processes()["api"]
    stack.pc("process", "restart", "postgres")
    wait_until(
        lambda: get(stack.url + "/readyz", 2)[0] == 200, "/readyz after the restart", timeout=60
    )
    assert get(stack.url + JANUARY) == answer
    api_after = stack.processes()["api"]
    assert (api_after["pid"], api_after["restarts"]) == (api_before["pid"], 0)

    # The stack's PostgreSQL listens on loopback only, with no Unix socket.
    psql = subprocess.run(
        [
            "psql",
            "-X",
            "-tA",
            "-h",
            "127.0.0.1",
            "-p",
            str(stack.pg_port),
            "-U",
            "rates",
            "-d",
            "rates",
            "-c",
            "SHOW listen_addresses",
            "-c",
            "SHOW unix_socket_directories",
        ],
        env={**stack.env, "PGPASSFILE": str(stack.state / "pgpass")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert psql.stdout.split("\n")[:2] == ["127.0.0.1", ""]

    # The API killed outright, under load, is restarted by process-compose.
    api_pid = stack.processes()["api"]["pid"]
    load = Load([stack.url + JANUARY], stack.base / "kill-load.jsonl", concurrency=4)
    try:
        time.sleep(2)  # the scenario: traffic flows before the kill
        killed = time.time()
        os.kill(api_pid, signal.SIGKILL)
        wait_until(
            lambda: (
                stack.processes()["api"]["pid"] not in (api_pid, 0)
                and get(stack.url + "/readyz", 2)[0] == 200
            ),
            "the API back after SIGKILL",
            timeout=60,
        )
        ready = time.time()
        time.sleep(2)  # the scenario: traffic flows after the restart
    finally:
        records = load.stop()
    assert get(stack.url + JANUARY) == answer
    before = [r for r in records if r["start"] + r["latency"] < killed]
    gap = [r for r in records if killed <= r["start"] + r["latency"] and r["start"] <= ready]
    after = [r for r in records if r["start"] > ready]
    assert before and after, (len(before), len(after))
    assert {r["status"] for r in before} == {200}
    assert {r["status"] for r in after} == {200}, Counter(r["status"] for r in after)
    # While no server listens, a request is refused at once or cut off.
    refused = Counter(r["status"] for r in gap if r["status"] != 200)
    assert set(refused) <= {"ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected"}
    # The load's clients retry at once, so a refused connection counts many times.
    figures(
        "api SIGKILL under load",
        ready_again_s=round(ready - killed, 2),
        requests=len(records),
        refused_or_cut_off_while_no_server_listened=sum(refused.values()),
        failed_after_ready=0,
    )

    # No secret in the processes' output.
    password = (stack.state / "pgpass").read_text().strip().rsplit(":", 1)[1]
    assert password not in stack.output()

    # A clean stop leaves nothing behind; the data stays. The API stops before
    # PostgreSQL, and `about`, which holds the state directory's lock, last.
    assert stack.down() == 0
    assert stack.leftovers() == []
    assert stack.exited()[-3:] == ["api", "postgres", "about"]
    assert port_closed(stack.pg_port) and port_closed(stack.api_port)

    # A second start loads nothing again, and serves the same answers.
    stack.up()
    assert "rates-seed: nothing to do: the database already holds" in stack.output_of_last_start()
    assert get(stack.url + JANUARY) == answer

    # Ctrl-C stops everything too.
    stack.down(how="sigint")
    assert stack.leftovers() == []
    assert port_closed(stack.pg_port) and port_closed(stack.api_port)


def test_postgres_outage_under_load(stack: Stack) -> None:
    """PostgreSQL stopped for 10 s through process-compose: 503s, then answers, same API."""
    stack.up()
    answer = get(stack.url + JANUARY)
    api_before = stack.processes()["api"]
    load = Load([stack.url + JANUARY], stack.base / "outage-load.jsonl", concurrency=4)
    try:
        time.sleep(2)  # the scenario: traffic flows before the outage
        stopping = time.time()
        stack.pc("process", "stop", "postgres")
        down = time.time()  # the server has exited: the stop waits for it
        time.sleep(10)  # the scenario: a 10 s outage
        up = time.time()
        stack.pc("process", "start", "postgres")
        wait_until(lambda: get(stack.url + "/readyz", 2)[0] == 200, "/readyz after the outage")
        time.sleep(3)  # the scenario: traffic flows after recovery
    finally:
        records = load.stop()
    assert get(stack.url + JANUARY) == answer
    api_after = stack.processes()["api"]
    assert (api_after["pid"], api_after["restarts"]) == (api_before["pid"], 0)
    api = settings_of(api_after["pid"])
    figures(
        "postgres stopped 10 s on the stack", **outage_figures(records, stopping, down, up, api)
    )
    assert stack.down() == 0
    assert stack.leftovers() == []


def test_two_stacks_side_by_side(make_stack: Callable[[], Stack]) -> None:
    """Two checkouts' stacks at once: their own state directories, ports and control sockets."""
    first, second = make_stack(), make_stack()
    first.up()
    second.up()
    answer = get(first.url + JANUARY)
    assert answer[0] == 200 and get(second.url + JANUARY) == answer
    assert first.processes()["postgres"]["pid"] != second.processes()["postgres"]["pid"]
    assert first.down() == 0
    assert first.leftovers() == [] and port_closed(first.pg_port)
    # The other stack is untouched by the first one's stop.
    assert get(second.url + JANUARY) == answer
    assert second.down() == 0
    assert second.leftovers() == []
