"""The cluster of nix/hosts/cluster.nix, run for real on a closed network of namespaces.

`Cluster.up()` builds the network (testlib/netns.py) from the address plan,
checks that it is closed, provisions the database password file on the database host
and each API host, makes the database host's PostgreSQL (initdb; the deployed
pg_hba.conf lines; the role's password set from the file the way
rates-db-password.service does it), and then deploys the rest with the repository's
own script, `nix/deploy.sh --first`. What varies from a NixOS deployment is only how
one host is switched, which this module's `switch` does, and how a command reaches a
host (`ip netns exec` instead of ssh; netns.Network.write_on_script):

    python -m testlib.cluster switch STATE NAME ADDRESS

does on one host what `nixos-rebuild switch` does there:
  db     reload PostgreSQL's configuration and run rates-seed (which does nothing once
         the data is loaded; the first time, it loads the reference dump)
  api*   stop rates-serve gracefully (SIGTERM: the requests in flight finish, as when
         systemd stops rates.service) and start the current release: the code
         directory and RATES_BUILD label the test set with `set_release()`
  lb     check the configuration, then start HAProxy or reload it (SIGUSR2 to the
         master, as NixOS's ExecReload does); the configuration is the one NixOS
         writes to /etc/haproxy.cfg: the haproxy module's `global` section, then
         nix/hosts/cluster/haproxy.cfg filled in.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testlib import ROOT
from testlib.cluster_plan import Plan
from testlib.netns import Host, Network, User, alive

DEPLOY = ROOT / "nix" / "deploy.sh"
HERE = Path(__file__).resolve().parent

# What nixos/modules/services/networking/haproxy.nix (nixos-25.11) puts before
# services.haproxy.config in /etc/haproxy.cfg.
NIXOS_HAPROXY_GLOBAL = """global
  # needed for hot-reload to work without dropping packets in multi-worker mode
  stats socket /run/haproxy/haproxy.sock mode 600 expose-fd listeners level user
"""
PGDATA = "pgdata"
STOP_TIMEOUT = 45  # rates.service's TimeoutStopSec (nix/module.nix)


@dataclass
class State:
    """What the switch needs to know about the running test, kept in a JSON file."""

    prefix: str
    work: str
    user: dict[str, Any]
    path: str
    dump: str | None
    release: dict[str, Any]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def read(cls, path: Path) -> State:
        return cls(**json.loads(path.read_text()))


class Cluster:
    def __init__(
        self,
        work: Path,
        user: User,
        dump: Path | None,
        prefix: str | None = None,
        path: str | None = None,
    ) -> None:
        self.plan = Plan.load()
        self.work = work
        self.user = user
        self.dump = dump
        self.net = Network(
            self.plan.hosts(),
            self.plan.network["prefixLength"],
            work,
            user,
            prefix=prefix,
            path=path,
        )
        self.state_file = work / "state.json"
        self.bin = work / "bin"
        self.password: str | None = None
        self._deploys = 0

    @classmethod
    def attach(cls, state_file: Path) -> tuple[Cluster, State]:
        """The cluster another process built (for the switch, run by the deploy script)."""
        state = State.read(state_file)
        cluster = cls(
            Path(state.work),
            User(**state.user),
            Path(state.dump) if state.dump else None,
            prefix=state.prefix,
            path=state.path,
        )
        return cluster, state

    def __getitem__(self, name: str) -> Host:
        return self.net[name]

    @property
    def apis(self) -> list[str]:
        return list(self.plan.api)

    def url(self, host: str, path: str) -> str:
        if host == "lb":
            return f"http://{self.plan.network['lb']}:{self.plan.port('lb')}{path}"
        return f"http://{self.net[host].address}:{self.plan.port('api')}{path}"

    # --- bringing it up and down ---

    def up(self, password: str) -> dict[str, Any]:
        """Build the network, the database host and, with nix/deploy.sh --first, the rest."""
        Network.destroy_stale()
        self.net.create()
        self.net.allow_low_ports("lb")
        checked = self.net.verify()
        self.password = password
        for name in ["db", *self.apis]:
            self._write_secret(self[name].run_dir / "secrets" / "rates-db-password", password)
        # The runtime directories NixOS makes for PostgreSQL and HAProxy.
        self._mkdir(self["db"].run_dir / "postgresql")
        self._mkdir(self["lb"].run_dir / "haproxy")
        self._mkdir(self["lb"].dir / "etc")
        (self["lb"].dir / "etc" / "haproxy.cfg").write_text(
            NIXOS_HAPROXY_GLOBAL + self.plan.haproxy_config()
        )
        self._mkdir(self.bin)
        self.net.write_on_script(self.bin / "on")
        switch = self.bin / "switch"
        switch.write_text(
            "#!/bin/sh\n"
            "# Generated by testlib/cluster.py for one test run: RATES_DEPLOY_SWITCH.\n"
            f"PYTHONPATH={ROOT / 'tests'} PYTHONDONTWRITEBYTECODE=1 exec {sys.executable}"
            f' -m testlib.cluster switch {self.state_file} "$@"\n'
        )
        switch.chmod(0o755)
        self.set_release("v1")
        self._init_db()
        result = self.deploy("--first")
        assert result.returncode == 0, f"nix/deploy.sh --first failed:\n{result.stderr}"
        return checked

    def down(self) -> int:
        """Stop everything; the number of processes that were running."""
        return self.net.destroy()

    def _mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, self.user.uid, self.user.gid)
        path.chmod(0o700)

    def _write_secret(self, path: Path, text: str) -> None:
        path.write_text(text + "\n")
        os.chown(path, self.user.uid, self.user.gid)
        path.chmod(0o400)

    def _init_db(self) -> None:
        db = self["db"]
        data = db.dir / PGDATA
        db.run(
            [
                "initdb",
                "-D",
                str(data),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth-local=peer",
                "--auth-host=reject",
            ]
        )
        # The test user administers the server over the socket, as the postgres
        # account does on NixOS (peer authentication); the network gets the
        # deployed lines and nothing else.
        (data / "pg_hba.conf").write_text(
            "# Written by testlib/cluster.py.\nlocal all all peer map=admin\n" + self.plan.pg_hba()
        )
        (data / "pg_ident.conf").write_text(
            f"admin {self.user.name} postgres\nadmin {self.user.name} rates\n"
        )
        with (data / "postgresql.conf").open("a") as f:
            f.write(
                # services.postgresql.enableTCPIP: every interface.
                f"listen_addresses = '*'\nport = {self.plan.port('db')}\n"
                "unix_socket_directories = '/run/postgresql'\n"
                # Every connection and statement logged: the password must be in none.
                "log_connections = on\nlog_statement = 'all'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        self.pg_ctl("start")
        self.psql("CREATE ROLE rates LOGIN")
        self.psql("CREATE DATABASE rates OWNER rates")
        # The SQL file rates-db-password.service (nix/module.nix) runs.
        db.run(
            [
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "/run/postgresql",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "role=rates",
                "-v",
                f"password_file={self.plan.network['passwordFile']}",
                "-f",
                str(ROOT / "db" / "role-password.sql"),
            ],
        )

    def pg_ctl(self, action: str) -> None:
        db = self["db"]
        args = ["pg_ctl", "-D", str(db.dir / PGDATA), "-l", str(db.dir / "postgresql.log")]
        if action == "start":
            args += ["start", "-w", "-t", "60"]
        elif action == "stop":
            args += ["stop", "-w", "-m", "fast"]
        else:
            args += [action]
        db.run(args)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = self["db"].run(
            [
                "psql",
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "/run/postgresql",
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ]
        )
        return out.stdout.strip()

    # --- releases and the deploy script ---

    def set_release(self, label: str, code: Path | None = None) -> None:
        """What the next switch of an API host starts: RATES_BUILD=label, code on PYTHONPATH."""
        State(
            prefix=self.net.prefix,
            work=str(self.work),
            user=self.user.__dict__,
            path=self.net.path,
            dump=str(self.dump) if self.dump else None,
            release={"label": label, "code": str(code) if code else None},
        ).save(self.state_file)

    def deploy(self, *args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
        """The repository's deploy script, with this network's `on` and `switch`; its output is
        kept in deploy-N.log."""
        self._deploys += 1
        result = subprocess.run(
            ["bash", str(DEPLOY), *args],
            env={
                **os.environ,
                "RATES_DEPLOY_ON": str(self.bin / "on"),
                "RATES_DEPLOY_SWITCH": str(self.bin / "switch"),
                "RATES_DEPLOY_TIMEOUT": str(timeout),
            },
            capture_output=True,
            text=True,
            timeout=20 * timeout,
        )
        (self.work / f"deploy-{self._deploys}.log").write_text(result.stdout + result.stderr)
        return result

    def switched(self) -> list[str]:
        """Every switch so far, in order: 'NAME LABEL'."""
        log = self.work / "switch.log"
        return log.read_text().splitlines() if log.exists() else []

    # --- what the tests look at ---

    def haproxy(self, command: str) -> str:
        """One command on HAProxy's runtime API, from the load balancer host."""
        socket = self.plan.network["haproxy"]["adminSocket"]
        return self["lb"].run(["socat", "-", f"UNIX-CONNECT:{socket}"], input=command + "\n").stdout

    def requests(self) -> int:
        """HTTP requests the load balancer has received so far."""
        text = self.haproxy("show stat").lstrip("# ")
        [frontend] = [
            row
            for row in csv.DictReader(text.splitlines())
            if row["pxname"] == "http" and row["svname"] == "FRONTEND"
        ]
        return int(frontend["req_tot"])

    def servers(self) -> dict[str, str]:
        """API host -> its status in HAProxy (UP, DOWN, DRAIN, MAINT, "UP 1/2", ...)."""
        text = self.haproxy("show stat").lstrip("# ")
        backend = self.plan.network["haproxy"]["backend"]
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(text.splitlines())
            if row["pxname"] == backend and row["svname"] in self.plan.api
        }

    def wait_servers(self, want: dict[str, str], timeout: float = 60) -> float:
        """Poll until HAProxy reports these states; the seconds it took."""
        start = time.monotonic()
        last: dict[str, str] = {}
        while time.monotonic() - start < timeout:
            last = self.servers()
            if all(last.get(name) == state for name, state in want.items()):
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"HAProxy did not reach {want} in {timeout} s: {last}")

    def fetch(self, urls: list[str], host: str = "client") -> list[dict[str, Any]]:
        """GET each URL once from a host (the client by default)."""
        out = self[host].run([sys.executable, str(HERE / "http_fetch.py"), *urls])
        return json.loads(out.stdout)

    def logs(self) -> dict[Path, str]:
        """Every log a host wrote in this run (PostgreSQL, rates-serve, HAProxy, deploy)."""
        return {
            p: p.read_text(errors="replace")
            for p in sorted(self.work.rglob("*.log"))
            if p.is_file()
        }


class ClientLoad:
    """testlib/load.py on the client host, until stop(). The constructor returns
    once its requests reach the load balancer: on a busy machine starting it takes
    a while, and a scenario's "traffic flows" must not start before that."""

    def __init__(self, cluster: Cluster, urls: list[str], concurrency: int = 4) -> None:
        self.out = cluster.work / f"load-{time.monotonic_ns()}.jsonl"
        before = cluster.requests()
        # The user writes the records into the work directory, which it owns.
        argv = [sys.executable, str(HERE / "load.py"), *urls, "--out", str(self.out)]
        argv += ["--concurrency", str(concurrency), "--max-seconds", "300"]
        self.proc = subprocess.Popen(cluster["client"].argv(argv))
        deadline = time.monotonic() + 60
        while cluster.requests() < before + 100:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("the load did not reach the load balancer in 60 s")
            time.sleep(0.1)

    def stop(self) -> list[dict[str, Any]]:
        self.proc.terminate()
        assert self.proc.wait(timeout=60) == 0
        with self.out.open() as f:
            return [json.loads(line) for line in f]


# --- the switch: one host to the current release (run by nix/deploy.sh, as root) ---


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _stop(host: Host, pid: int | None, name: str) -> None:
    if pid is None or not alive(pid):
        return
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    if name.encode() not in cmdline:  # not ours: the pid was reused
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while alive(pid):
        if time.monotonic() > deadline:
            host.kill_all(signal.SIGKILL)
            break
        time.sleep(0.05)


def _switch_db(cluster: Cluster, state: State) -> None:
    db = cluster["db"]
    cluster.pg_ctl("reload")
    env = {
        "PGHOST": "/run/postgresql",
        "PGPORT": str(cluster.plan.port("db")),
        "PGUSER": "rates",
        "PGDATABASE": "rates",
        **({"RATES_DUMP": state.dump} if state.dump else {}),
    }
    result = db.run(["rates-seed"], env=env, check=False, timeout=300)
    with (db.dir / "seed.log").open("a") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"switch db: rates-seed exited with {result.returncode}: {result.stderr}")


def api_environment(cluster: Cluster, release: dict[str, Any]) -> dict[str, str]:
    """rates.service's environment on an API host: nix/module.nix with cluster.nix's api role.

    The role sets the listening address, the port and the database from network.json,
    and the rest from api-environment.json. The module's `workers` and `threads` are
    null by default, which sets neither RATES_WORKERS nor RATES_THREADS: the service's
    own defaults (rates/settings.py) apply on the hosts, and so here. The one
    difference is the password file's path: the module hands the file over as a
    systemd credential, here it is read where it was provisioned.
    """
    plan = cluster.plan
    return {
        "PGHOST": plan.network["db"],
        "PGPORT": str(plan.port("db")),
        "PGDATABASE": "rates",
        "PGUSER": "rates",
        "PGPASSWORD_FILE": plan.network["passwordFile"],
        "RATES_HOST": "0.0.0.0",
        "RATES_PORT": str(plan.port("api")),
        "PYTHONUNBUFFERED": "1",
        **plan.api_environment,
        "RATES_BUILD": release["label"],
        **({"PYTHONPATH": release["code"]} if release["code"] else {}),
    }


def _switch_api(cluster: Cluster, state: State, name: str) -> None:
    host = cluster[name]
    pidfile = host.dir / "rates-serve.pid"
    _stop(host, _read_pid(pidfile), "rates-serve")
    label = state.release["label"]
    pid = host.spawn(
        ["rates-serve"], api_environment(cluster, state.release), host.dir / f"serve-{label}.log"
    )
    pidfile.write_text(f"{pid}\n")


def _switch_lb(cluster: Cluster) -> None:
    lb = cluster["lb"]
    config = str(lb.dir / "etc" / "haproxy.cfg")
    lb.run(["haproxy", "-c", "-q", "-f", config])
    master = _read_pid(lb.run_dir / "haproxy" / "haproxy.pid")
    if master is not None and alive(master):
        os.kill(master, signal.SIGUSR2)
        return
    lb.spawn(
        ["haproxy", "-W", "-f", config, "-p", "/run/haproxy/haproxy.pid"],
        {},
        lb.dir / "haproxy.log",
    )


def main(argv: list[str]) -> None:
    if len(argv) != 4 or argv[0] != "switch":
        raise SystemExit("usage: python -m testlib.cluster switch STATE NAME ADDRESS")
    cluster, state = Cluster.attach(Path(argv[1]))
    name = argv[2]
    with (cluster.work / "switch.log").open("a") as f:
        f.write(f"{name} {state.release['label']}\n")
    if name == "db":
        _switch_db(cluster, state)
    elif name == "lb":
        _switch_lb(cluster)
    elif name in cluster.plan.api:
        _switch_api(cluster, state, name)
    else:
        raise SystemExit(f"switch: no host {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
