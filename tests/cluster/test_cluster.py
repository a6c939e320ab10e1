"""The multi-host layout of nix/hosts/cluster.nix, run for real: a database host, two API
hosts and an HAProxy load balancer, each a network namespace on a closed bridge, with a
client host that sends the load (testlib/netns.py, testlib/cluster.py).

Every host runs the real program with the deployed files (nix/hosts/cluster/): PostgreSQL
with the pg_hba.conf lines, rates-serve with the API hosts' settings and the password
from a file, HAProxy with haproxy.cfg; the rolling upgrade is nix/deploy.sh. Faults are
made with the real means (SIGKILL, SIGSTOP, `ip link set down`, packets dropped at random
by iptables, `pg_ctl stop`) under load from the client, and each test prints its figures
(`pytest -m cluster -s`).
"""

from __future__ import annotations

import csv
import importlib.metadata
import ipaddress
import json
import math
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import rates.app
from rates import settings
from testlib import ROOT
from testlib.cluster import NIXOS_HAPROXY_GLOBAL, ClientLoad, Cluster, api_environment
from testlib.cluster_plan import Plan
from testlib.data import contract_cases
from testlib.figures import figures
from testlib.sample import JANUARY, JANUARY_BODY
from testlib.serve import outage_figures

VERSION = importlib.metadata.version("rates")
ERROR_KEYS = {"error", "message"}


# --- the deploy files: one source, read by Nix and by these tests alike ---


def nix_eval(attribute: str) -> Any:
    if shutil.which("nix-instantiate") is None:
        pytest.skip("nix-instantiate is not installed: .ci/install-nix-tools (or use Nix)")
    out = subprocess.run(
        [
            "nix-instantiate",
            "--store",
            "dummy://",
            "--eval",
            "--strict",
            "--json",
            "-E",
            f"(import {ROOT / 'nix' / 'hosts' / 'cluster.nix'}).{attribute}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def test_nix_and_the_tests_fill_in_the_same_files() -> None:
    """cluster.nix and testlib/cluster_plan.py render haproxy.cfg and pg_hba.conf alike."""
    plan = Plan.load()
    assert nix_eval("network") == plan.network
    assert nix_eval("apiEnvironment") == plan.api_environment
    assert nix_eval("haproxyConfig") == plan.haproxy_config()
    assert nix_eval("pgHba") == plan.pg_hba()


def test_address_plan_is_consistent() -> None:
    plan = Plan.load()
    api_subnet = ipaddress.IPv4Network(plan.network["apiSubnet"])
    addresses = [ipaddress.ip_address(a) for a in plan.hosts().values()]
    assert len(set(addresses)) == len(addresses) == 5
    assert all(a in plan.subnet for a in addresses)
    assert api_subnet.subnet_of(plan.subnet)
    assert all(ipaddress.ip_address(a) in api_subnet for a in plan.api.values())
    # Only the API hosts may log in to PostgreSQL: nobody else is in their subnet.
    for name in ("db", "lb", "client"):
        assert ipaddress.ip_address(plan.network[name]) not in api_subnet, name
    assert "@" not in plan.haproxy_config() + plan.pg_hba()
    assert plan.pg_hba().splitlines()[-1] == (
        f"host rates rates {plan.network['apiSubnet']} scram-sha-256"
    )


def test_haproxy_accepts_the_configuration(tmp_path: Path) -> None:
    """What NixOS writes to /etc/haproxy.cfg passes `haproxy -c`, as in its unit."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed: apt-get install haproxy")
    config = tmp_path / "haproxy.cfg"
    config.write_text(NIXOS_HAPROXY_GLOBAL + Plan.load().haproxy_config())
    result = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the cluster under test ---


def all_up(cluster: Cluster) -> dict[str, str]:
    return dict.fromkeys(cluster.apis, "UP")


def probe(cluster: Cluster) -> tuple[str, Any]:
    """A /rates request with data behind it, and its answer: from the contract on the
    reference dump, or the sample's January query."""
    if cluster.dump is None:
        return JANUARY, JANUARY_BODY
    case = next(c for c in contract_cases() if c["path"] == "/rates" and c["status"] == 200)
    return f"/rates?{urllib.parse.urlencode(case['query'])}", case["body"]


def backend_counters(cluster: Cluster) -> dict[str, int]:
    """HAProxy's retries and redispatches for the backend so far."""
    text = cluster.haproxy("show stat").lstrip("# ")
    backend = cluster.plan.network["haproxy"]["backend"]
    row = next(
        r
        for r in csv.DictReader(text.splitlines())
        if r["pxname"] == backend and r["svname"] == "BACKEND"
    )
    return {"retries": int(row["wretr"] or 0), "redispatches": int(row["wredis"] or 0)}


def failures(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        f"{r['status']} {r.get('body', '')}".strip() for r in records if r["status"] != 200
    )


def cut_short(records: list[dict[str, Any]], began: float, ended: float) -> list[dict[str, Any]]:
    """The answers a fault made between `began` and `ended` cut short, checked to have been
    in flight at it. An answer whose headers HAProxy had passed on when its host died, froze
    or lost its link cannot be retried: the rest never comes (gunicorn writes the headers
    and the body in two calls), and it arrives cut short."""
    cut = [r for r in records if r["status"] == "IncompleteRead"]
    for r in cut:
        assert r["start"] <= ended and r["start"] + r["latency"] >= began, r
    return cut


def build(cluster: Cluster, name: str) -> str:
    """The release an API host runs, from its own /healthz."""
    port = cluster.plan.port("api")
    [answer] = cluster.fetch([f"http://127.0.0.1:{port}/healthz"], host=name)
    assert answer["status"] == 200, answer
    return answer["headers"]["rates-build"]


def close(got: Any, want: Any) -> bool:
    """Equal JSON, floats equal to 1e-9 (the contract's tolerance)."""
    if isinstance(want, float) or isinstance(got, float):
        return isinstance(got, int | float) and math.isclose(got, want, rel_tol=0, abs_tol=1e-9)
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(close(got[k], want[k]) for k in want)
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(close(g, w) for g, w in zip(got, want, strict=True))
        )
    return got == want


def deployed_settings(cluster: Cluster) -> settings.Settings:
    """The settings an API host of cluster.nix runs with: api-environment.json on top of the
    module's defaults (and the service's own, where the module sets nothing)."""
    env = api_environment(cluster, {"label": "v1", "code": None})
    # A path on the hosts, not here; the password plays no part in what is compared.
    del env["PGPASSWORD_FILE"]
    return settings.load(env)


def test_api_hosts_run_the_deployed_settings(cluster: Cluster) -> None:
    """What the tests start on an API host is what cluster.nix deploys: the environment of
    each running rates-serve, and the workers and threads it reports."""
    want = deployed_settings(cluster)
    for name in cluster.apis:
        host = cluster[name]
        pid = int((host.dir / "rates-serve.pid").read_text())
        environ = dict(
            entry.split("=", 1)
            for entry in Path(f"/proc/{pid}/environ").read_text().split("\0")
            if "=" in entry
        )
        for variable, value in cluster.plan.api_environment.items():
            assert environ[variable] == value, (name, variable)
        # Set by neither the module's defaults nor api-environment.json.
        assert "RATES_WORKERS" not in environ and "RATES_THREADS" not in environ, name
        [log] = host.dir.glob(f"serve-{environ['RATES_BUILD']}.log")
        assert (
            f"rates-serve: listening on http://0.0.0.0:{cluster.plan.port('api')} "
            f"({want.workers} workers x {want.threads} threads)"
        ) in log.read_text(), name
    figures(
        "API hosts run the deployed settings",
        api_hosts=len(cluster.apis),
        workers=want.workers,
        threads=want.threads,
        connect_timeout_s=want.connect_timeout,
        statement_timeout_ms=want.statement_timeout_ms,
    )


def test_contract_through_the_load_balancer(cluster: Cluster) -> None:
    """Every contract case answers through the load balancer as on one host."""
    cases = contract_cases()  # skips without the reference dump
    assert cluster.dump is not None
    cluster.wait_servers(all_up(cluster))
    paths = [
        c["path"] + (f"?{urllib.parse.urlencode(c['query'])}" if c["query"] else "") for c in cases
    ]
    through_lb = cluster.fetch([cluster.url("lb", p) for p in paths])
    for name in cluster.apis:
        direct = cluster.fetch([cluster.url(name, p) for p in paths])
        for case, lb, host in zip(cases, through_lb, direct, strict=True):
            assert (lb["status"], json.loads(lb["body"])) == (
                host["status"],
                json.loads(host["body"]),
            ), (case, name)
    for case, lb in zip(cases, through_lb, strict=True):
        body = json.loads(lb["body"])
        assert lb["status"] == case["status"], (case, lb)
        if case["status"] == 200:
            assert close(body, case["body"]), (case, body)
        else:
            assert body["error"] == "bad_request", (case, body)
    figures(
        "contract through the load balancer",
        cases=len(cases),
        equal_to_each_api_host=len(cases),
        api_hosts=len(cluster.apis),
    )


def test_access_control(cluster: Cluster) -> None:
    """Only the API subnet logs in, only with the password; the password is in no argv,
    environment or log on any host."""
    plan = cluster.plan
    assert cluster.password is not None
    db, port = plan.network["db"], plan.port("db")

    def login(host: str, password: str) -> subprocess.CompletedProcess[str]:
        pgpass = cluster[host].dir / "pgpass"
        pgpass.write_text(f"{db}:{port}:rates:rates:{password}\n")
        os.chown(pgpass, cluster.user.uid, cluster.user.gid)
        pgpass.chmod(0o600)
        try:
            return cluster[host].run(
                [
                    "psql",
                    "-X",
                    "-At",
                    "-h",
                    db,
                    "-p",
                    str(port),
                    "-U",
                    "rates",
                    "-d",
                    "rates",
                    "-c",
                    "SELECT inet_client_addr()",
                ],
                env={"PGPASSFILE": str(pgpass), "PGCONNECT_TIMEOUT": "5"},
                check=False,
            )
        finally:
            pgpass.unlink()

    for host in ("client", "lb"):
        result = login(host, cluster.password)
        address = plan.network[host]
        assert result.returncode == 2, result
        assert (
            f'no pg_hba.conf entry for host "{address}", user "rates", database "rates"'
            in result.stderr
        ), result.stderr
    wrong = login("api1", "not-the-password")
    assert wrong.returncode == 2
    assert 'password authentication failed for user "rates"' in wrong.stderr, wrong.stderr
    right = login("api1", cluster.password)
    assert (right.returncode, right.stdout.strip()) == (0, plan.api["api1"]), right

    # The server side: SCRAM for the API subnet, a SCRAM verifier stored.
    subnet = ipaddress.ip_network(plan.network["apiSubnet"])
    assert (
        cluster.psql(
            "SELECT type, database, user_name, address, netmask, auth_method "
            "FROM pg_hba_file_rules WHERE type = 'host'"
        )
        == f"host|{{rates}}|{{rates}}|{subnet.network_address}|{subnet.netmask}|scram-sha-256"
    )
    assert cluster.psql("SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'rates'") == (
        "SCRAM-SHA-256$"
    )
    # The running API hosts logged in with it: their sessions on the database host.
    sessions = cluster.psql(
        "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE usename = 'rates' "
        "AND client_addr IS NOT NULL ORDER BY 1"
    ).splitlines()
    assert sessions == sorted(plan.api.values()), sessions

    secret = cluster.password.encode()
    processes: dict[str, int] = {}
    for on in cluster.net.hosts.values():
        processes[on.name] = 0
        for pid in on.pids():
            try:
                listed = [
                    Path(f"/proc/{pid}/{part}").read_bytes() for part in ("cmdline", "environ")
                ]
            except (FileNotFoundError, ProcessLookupError):
                continue  # ended since it was listed (a PostgreSQL backend)
            assert not any(secret in data for data in listed), f"{on.name}: pid {pid}"
            processes[on.name] += 1
    # Each API host: the gunicorn master and its workers; the load balancer: HAProxy's
    # master and worker; PostgreSQL's processes on the database host.
    assert {n: c for n, c in processes.items() if n != "db"} == {
        **dict.fromkeys(cluster.apis, 1 + deployed_settings(cluster).workers),
        "lb": 2,
        "client": 0,
    }, processes
    assert processes["db"] > 0
    logs = cluster.logs()
    for path, text in logs.items():
        assert cluster.password not in text, path
    figures(
        "access control",
        refused_outside_api_subnet=2,
        refused_wrong_password=1,
        processes_scanned=sum(processes.values()),
        logs_scanned=len(logs),
        password_occurrences=0,
    )


def test_api_host_killed_under_load(cluster: Cluster) -> None:
    """SIGKILL on every process of an API host: through the load balancer, no request fails
    but an answer the host was writing at that instant, which arrives cut short."""
    cluster.wait_servers(all_up(cluster))
    path, _ = probe(cluster)
    before = backend_counters(cluster)
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    try:
        time.sleep(2)  # the scenario: traffic flows before the kill
        kill_started = time.time()
        killed = cluster["api1"].kill_all(signal.SIGKILL)
        kill_ended = time.time()
        left = cluster.wait_servers({"api1": "DOWN"})
        time.sleep(2)  # the scenario: api2 alone serves for a while
        # What systemd's Restart= does: start it again.
        restarted = time.monotonic()
        subprocess.run([str(cluster.bin / "switch"), "api1", cluster.plan.api["api1"]], check=True)
        cluster.wait_servers(all_up(cluster))
        back = time.monotonic() - restarted
        time.sleep(1)  # the scenario: both serve again
    finally:
        records = load.stop()
    after = backend_counters(cluster)
    assert len(killed) == 1 + deployed_settings(cluster).workers, killed  # master and workers
    cut = cut_short(records, kill_started, kill_ended)
    assert failures([r for r in records if r not in cut]) == Counter()
    figures(
        "API host SIGKILLed under load",
        requests=len(records),
        other_failures=0,
        cut_short_in_flight_at_the_kill=len(cut),
        out_of_rotation_after_s=round(left, 2),
        back_in_rotation_after_restart_s=round(back, 2),
        slowest_ms=round(max(r["latency"] for r in records) * 1000, 1),
        haproxy_retries=after["retries"] - before["retries"],
        haproxy_redispatches=after["redispatches"] - before["redispatches"],
    )


def test_api_host_cut_off_under_load(cluster: Cluster) -> None:
    """An API host's link down: what it costs, and every error in the API's JSON shape, but
    an answer the host was sending at that instant, which arrives cut short."""
    cluster.wait_servers(all_up(cluster))
    path, _ = probe(cluster)
    before = backend_counters(cluster)
    ns = cluster["api2"].ns
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    try:
        time.sleep(2)  # the scenario: traffic flows before the cut
        cut = time.time()
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "down"], check=True)
        cut_by = time.time()
        left = cluster.wait_servers({"api2": "DOWN"})
        time.sleep(6)  # the scenario: cut off for longer than HAProxy's server timeout
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
        back = cluster.wait_servers(all_up(cluster))
        time.sleep(1)  # the scenario: both serve again
    finally:
        records = load.stop()
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=False)
    after = backend_counters(cluster)
    cut_answers = cut_short(records, cut, cut_by)
    records = [r for r in records if r not in cut_answers]
    failed = failures(records)
    for r in records:
        if r["status"] != 200:
            assert isinstance(r["status"], int) and r["type"] == "application/json", r
            assert set(json.loads(r["body"])) == ERROR_KEYS, r
    slowest = max(records, key=lambda r: r["latency"])
    around = [r for r in records if cut - 1 < r["start"] < cut + 1]
    figures(
        "API host cut off under load",
        requests=len(records) + len(cut_answers),
        cut_short_in_flight_at_the_cut=len(cut_answers),
        other_failures=sum(failed.values()),
        failures=dict(failed) or "none",
        slowest_s=round(slowest["latency"], 2),
        slowest_in_flight_at_cut=slowest["start"] < cut < slowest["start"] + slowest["latency"],
        over_1s=sum(r["latency"] > 1 for r in records),
        requests_within_1s_of_cut=len(around),
        out_of_rotation_after_s=round(left, 2),
        back_in_rotation_after_link_up_s=round(back, 2),
        haproxy_retries=after["retries"] - before["retries"],
        haproxy_redispatches=after["redispatches"] - before["redispatches"],
    )
    assert failed == Counter(), failed


def test_postgres_outage_under_load(cluster: Cluster) -> None:
    """PostgreSQL stopped 10 s: JSON 503s in the API's shape, then correct answers."""
    cluster.wait_servers(all_up(cluster))
    path, body = probe(cluster)
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    try:
        time.sleep(2)  # the scenario: traffic flows before the outage
        stopping = time.time()
        cluster.pg_ctl("stop")
        down = time.time()  # the server has exited: the stop waits for it
        time.sleep(10)  # the scenario: a 10 s outage
        up = time.time()
        cluster.pg_ctl("start")
        cluster.wait_servers(all_up(cluster))
        time.sleep(3)  # the scenario: traffic flows after recovery
    finally:
        records = load.stop()
    html = sum((r["type"] or "").startswith("text/html") for r in records)
    for r in records:
        if r["status"] != 200:
            assert r["type"] == "application/json", r
            answer = json.loads(r["body"])
            assert set(answer) == ERROR_KEYS and answer["error"] == "unavailable", r
    unavailable = [r for r in records if r["status"] == 503]
    from_haproxy = sum(
        json.loads(r["body"])["message"] == "no API host can answer now" for r in unavailable
    )
    [answer] = cluster.fetch([cluster.url("lb", path)])
    assert (answer["status"], json.loads(answer["body"])) == (200, body)
    during = sorted(r["latency"] for r in records if down + 0.5 < r["start"] < up - 0.5)
    figures(
        "postgres outage 10 s through the load balancer",
        **outage_figures(records, stopping, down, up, deployed_settings(cluster)),
        median_during_outage_ms=round(during[len(during) // 2] * 1000, 1),
        p90_during_outage_ms=round(during[len(during) * 9 // 10] * 1000, 1),
        answered_by_the_api=len(unavailable) - from_haproxy,
        answered_by_haproxy=from_haproxy,
        html=html,
    )


def test_deploy_checks_the_password_files_first(cluster: Cluster) -> None:
    """Without the password file on one host, the deploy script switches nothing."""
    cluster.wait_servers(all_up(cluster))
    secret = cluster["api2"].run_dir / "secrets" / "rates-db-password"
    aside = secret.with_suffix(".aside")
    switched = cluster.switched()
    secret.rename(aside)
    try:
        result = cluster.deploy()
    finally:
        aside.rename(secret)
    assert result.returncode == 1
    assert (
        "rates-deploy: error: the database password file /run/secrets/rates-db-password "
        "is missing or empty on: api2; nothing was changed"
    ) in result.stderr, result.stderr
    assert cluster.switched() == switched
    # Nothing drained: every API host still in rotation ("UP", or "UP 1/2" after
    # one failed check).
    assert {name: state.split()[0] for name, state in cluster.servers().items()} == all_up(cluster)


def release(cluster: Cluster, label: str) -> Path:
    """A new release of the code, in a directory of its own (as a new store path would be)."""
    code = cluster.work / "releases" / label
    package = Path(rates.app.__file__).parent
    shutil.copytree(package, code / "rates", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [code.parent, *code.parent.rglob("*")]:
        os.chown(path, cluster.user.uid, cluster.user.gid)
    return code


def test_deploy_stops_at_a_host_that_does_not_become_ready(cluster: Cluster) -> None:
    """A release that cannot start: the script stops at the first API host, says what to do,
    and the others serve on; not one request fails."""
    cluster.wait_servers(all_up(cluster))
    path, _ = probe(cluster)
    running = {name: build(cluster, name) for name in cluster.apis}
    switched = len(cluster.switched())
    # rates-serve refuses this label (exit status 2), so the host never becomes ready.
    cluster.set_release("not a label")
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    try:
        result = cluster.deploy(timeout=10)
    finally:
        records = load.stop()
    assert result.returncode == 1
    first, second = cluster.apis
    assert f"rates-deploy: error: {first} does not answer /readyz after 10 s" in result.stderr
    assert f"nixos-rebuild switch --rollback --target-host root@{cluster.plan.api[first]}" in (
        result.stderr
    )
    assert cluster.switched()[switched:] == ["db not a label", f"{first} not a label"]
    # In rotation: "UP", or "UP 1/3" after one slow check under load.
    assert cluster.servers()[second].split()[0] == "UP"
    assert build(cluster, second) == running[second]
    assert failures(records) == Counter(), failures(records)

    # The fix: a good release, and the same command again.
    cluster.set_release("v1")
    result = cluster.deploy()
    assert result.returncode == 0, result.stderr
    cluster.wait_servers(all_up(cluster))
    figures("deploy stopped at a failing host", requests=len(records), failed=0, recovered=True)


def test_rolling_upgrade_under_load(cluster: Cluster) -> None:
    """nix/deploy.sh replaces every API host with a new release under load: 0 failures."""
    cluster.wait_servers(all_up(cluster))
    path, _ = probe(cluster)
    old = {name: build(cluster, name) for name in cluster.apis}
    assert set(old.values()) == {f"{VERSION}+v1"}
    cluster.set_release("v2", release(cluster, "v2"))
    switched = len(cluster.switched())
    before = backend_counters(cluster)
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    try:
        time.sleep(2)  # the scenario: traffic flows before the upgrade
        started = time.monotonic()
        result = cluster.deploy()
        took = time.monotonic() - started
        time.sleep(1)  # the scenario: traffic flows after it
    finally:
        records = load.stop()
    after = backend_counters(cluster)
    assert result.returncode == 0, result.stderr
    assert cluster.switched()[switched:] == ["db v2", *(f"{n} v2" for n in cluster.apis), "lb v2"]
    assert {name: build(cluster, name) for name in cluster.apis} == dict.fromkeys(
        cluster.apis, f"{VERSION}+v2"
    )
    through_lb = cluster.fetch([cluster.url("lb", "/healthz")] * 10)
    assert {a["headers"]["rates-build"] for a in through_lb} == {f"{VERSION}+v2"}
    cluster.wait_servers(all_up(cluster))
    assert failures(records) == Counter(), failures(records)
    figures(
        "rolling upgrade under load",
        api_hosts=len(cluster.apis),
        requests=len(records),
        failed=0,
        deploy_s=round(took, 1),
        haproxy_retries=after["retries"] - before["retries"],
        haproxy_redispatches=after["redispatches"] - before["redispatches"],
    )


# --- gray failures: neither up nor down ---


def served(cluster: Cluster) -> dict[str, int]:
    """Requests each API host has been sent so far (HAProxy's stot)."""
    text = cluster.haproxy("show stat").lstrip("# ")
    backend = cluster.plan.network["haproxy"]["backend"]
    return {
        row["svname"]: int(row["stot"] or 0)
        for row in csv.DictReader(text.splitlines())
        if row["pxname"] == backend and row["svname"] in cluster.plan.api
    }


def latencies(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The latency figures of a load record."""
    ordered = sorted(r["latency"] for r in records)
    return {
        "median_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "p99_ms": round(ordered[len(ordered) * 99 // 100] * 1000, 1),
        "slowest_s": round(ordered[-1], 2),
        "over_1s": sum(latency > 1 for latency in ordered),
        "over_1_5s": sum(latency > 1.5 for latency in ordered),
    }


def watch(cluster: Cluster, name: str, seconds: float) -> dict[str, Any]:
    """Poll HAProxy's view of one API host for `seconds`: how long it was out of rotation
    (any status but UP or "UP n/m"), how many times it left, and when it first left."""
    start = time.monotonic()
    out = 0.0
    left = 0
    first_left: float | None = None
    was_in = True
    last = start
    while (now := time.monotonic()) - start < seconds:
        is_in = cluster.servers()[name].startswith("UP")
        if not is_in:
            out += now - last
        if was_in and not is_in:
            left += 1
            if first_left is None:
                first_left = now - start
        was_in, last = is_in, now
        time.sleep(0.05)
    return {"out": out, "left": left, "first_left": first_left}


def test_api_host_frozen_under_load(cluster: Cluster) -> None:
    """Every process of an API host stopped (SIGSTOP) for 15 s: the kernel still accepts
    its connections, nothing answers. No request fails but an answer the host was writing
    at that instant, which arrives cut short; each one sent to it costs at most HAProxy's
    `timeout server` (1 s) more, until the checks take it out of rotation."""
    cluster.wait_servers(all_up(cluster))
    path, _ = probe(cluster)
    before = backend_counters(cluster)
    host = cluster["api1"]
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    stopped: list[int] = []
    try:
        time.sleep(2)  # the scenario: traffic flows before the freeze
        frozen = time.time()
        stopped = host.kill_all(signal.SIGSTOP)
        frozen_by = time.time()
        seen = watch(cluster, "api1", 15)  # the scenario: frozen 15 s
        host.kill_all(signal.SIGCONT)
        resumed = time.time()
        back = cluster.wait_servers(all_up(cluster))
        time.sleep(1)  # the scenario: both serve again
    finally:
        if stopped:
            host.kill_all(signal.SIGCONT)
        records = load.stop()
    after = backend_counters(cluster)
    assert len(stopped) == 1 + deployed_settings(cluster).workers, stopped
    cut = cut_short(records, frozen, frozen_by)
    assert failures([r for r in records if r not in cut]) == Counter()
    assert seen["first_left"] is not None, "api1 never left rotation while frozen"
    frozen_window = [r for r in records if frozen <= r["start"] < resumed]
    figures(
        "API host frozen (SIGSTOP) 15 s under load",
        requests=len(records),
        other_failures=0,
        cut_short_in_flight_at_the_freeze=len(cut),
        out_of_rotation_after_s=round(seen["first_left"], 2),
        times_out_of_rotation=seen["left"],
        back_in_rotation_after_resume_s=round(back, 2),
        requests_while_frozen=len(frozen_window),
        **latencies(records),
        haproxy_retries=after["retries"] - before["retries"],
        haproxy_redispatches=after["redispatches"] - before["redispatches"],
    )


LOSS = 0.2


def test_api_host_on_a_lossy_link_under_load(cluster: Cluster) -> None:
    """20% of the packets an API host receives dropped for 15 s (its SYNs, requests and
    ACKs): no request fails. The trade-off haproxy.cfg chose (three failed checks in a row,
    not one failed connection) decides how long the host spends out of rotation: printed,
    not asserted. Loss on the packets it sends can cut an answer short once it has begun,
    which no load balancer can retry (haproxy.cfg says why); that is not tested here."""
    cluster.wait_servers(all_up(cluster))
    path, _ = probe(cluster)
    before = backend_counters(cluster)
    host = cluster["api2"]
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    try:
        time.sleep(2)  # the scenario: traffic flows before the loss
        sent = served(cluster)
        with host.lossy(LOSS):
            lossy_from = time.time()
            seen = watch(cluster, "api2", 15)  # the scenario: 15 s of loss
            lossy_to = time.time()
            sent_during = {n: c - sent[n] for n, c in served(cluster).items()}
        back = cluster.wait_servers(all_up(cluster))
        time.sleep(1)  # the scenario: a clean link again
    finally:
        records = load.stop()
    after = backend_counters(cluster)
    assert failures(records) == Counter(), failures(records)
    during = [r for r in records if lossy_from <= r["start"] < lossy_to]
    figures(
        f"API host losing {LOSS:.0%} of the packets it receives, 15 s under load",
        requests=len(records),
        failed=0,
        requests_during_loss=len(during),
        out_of_rotation_s=round(seen["out"], 2),
        times_out_of_rotation=seen["left"],
        share_sent_to_lossy_host=f"{sent_during['api2'] / max(1, sum(sent_during.values())):.0%}",
        back_in_rotation_after_loss_s=round(back, 2),
        **latencies(during),
        haproxy_retries=after["retries"] - before["retries"],
        haproxy_redispatches=after["redispatches"] - before["redispatches"],
    )


@pytest.mark.parametrize("which", ["first", "last"])
def test_deploy_with_an_api_host_down(cluster: Cluster, which: str) -> None:
    """An API host already down (its service killed, the host reachable): the deploy script
    switches it first, whichever it is, then rolls the others, losing no request."""
    cluster.wait_servers(all_up(cluster))
    path, _ = probe(cluster)
    down = cluster.apis[0] if which == "first" else cluster.apis[-1]
    others = [name for name in cluster.apis if name != down]
    cluster[down].kill_all(signal.SIGKILL)
    cluster.wait_servers({down: "DOWN"})
    label = f"down-{which}"
    cluster.set_release(label, release(cluster, label))
    switched = len(cluster.switched())
    load = ClientLoad(cluster, [cluster.url("lb", path)])
    try:
        started = time.monotonic()
        result = cluster.deploy()
        took = time.monotonic() - started
        time.sleep(1)  # the scenario: traffic flows after it
    finally:
        records = load.stop()
    assert result.returncode == 0, result.stderr
    assert (
        f"rates-deploy: {down} is out of rotation (DOWN): it serves nothing, "
        "so it is switched first"
    ) in result.stderr, result.stderr
    assert cluster.switched()[switched:] == [
        f"db {label}",
        f"{down} {label}",
        *(f"{name} {label}" for name in others),
        f"lb {label}",
    ]
    assert {name: build(cluster, name) for name in cluster.apis} == dict.fromkeys(
        cluster.apis, f"{VERSION}+{label}"
    )
    cluster.wait_servers(all_up(cluster))
    assert failures(records) == Counter(), failures(records)
    figures(
        f"deploy with the {which} API host ({down}) down, under load",
        requests=len(records),
        failed=0,
        deploy_s=round(took, 1),
        switched=" ".join(line.split()[0] for line in cluster.switched()[switched:]),
        slowest_s=round(max(r["latency"] for r in records), 2),
    )
