"""A closed network of hosts made of Linux network namespaces (tests/cluster).

Each host is a network namespace with one link, eth0, a veth pair whose other end is
a port of a bridge in a namespace of the network's own. No namespace has a default
route, IPv6 is off, and the machine's own namespace has no link into any of them: a
packet can only go from one host to another. `verify()` proves that from the
kernel's own tables before any traffic.

Each host also has its own /run: every command run on it sees a directory of the
host's bind-mounted there (in the mount namespace `ip netns exec` makes), so the
paths of the deployed hosts hold as they are: /run/secrets/rates-db-password,
/run/postgresql, /run/haproxy/admin.sock. Commands run as an unprivileged user
(`setpriv`), with only the environment given; building the network is the only
thing that needs root.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    @classmethod
    def owning(cls, path: Path) -> User:
        entry = pwd.getpwuid(path.stat().st_uid)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)


def ip(*args: str, netns: str | None = None) -> Any:
    """`ip [-n NETNS] -j ARGS`, decoded; or None when ip prints nothing."""
    cmd = ["ip", *(["-n", netns] if netns else []), "-j", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else None


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not: nobody may have reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Host:
    """One host: a network namespace, a directory (its /run among it), commands as the user."""

    def __init__(self, network: Network, name: str, address: str) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.ns = f"{network.prefix}-{name}"
        self.dir = network.work / "hosts" / name
        self.run_dir = self.dir / "run"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            "PATH": self.network.path,
            "HOME": str(self.dir),
            "LANG": "C.UTF-8",
            **(extra or {}),
        }

    def argv(self, cmd: list[str], env: dict[str, str] | None = None) -> list[str]:
        """The command line that runs `cmd` on this host, as the user, with exactly `env`."""
        user = self.network.user
        return [
            "ip",
            "netns",
            "exec",
            self.ns,
            # ip netns exec made a mount namespace of its own: the host's /run goes there.
            "sh",
            "-c",
            'mount --bind "$1" /run && shift && exec "$@"',
            "sh",
            str(self.run_dir),
            "setpriv",
            f"--reuid={user.uid}",
            f"--regid={user.gid}",
            "--init-groups",
            "--no-new-privs",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in self.env(env).items()),
            *cmd,
        ]

    def run(
        self,
        cmd: list[str],
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(cmd, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"on {self.name}: {shlex.join(cmd)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def spawn(self, cmd: list[str], env: dict[str, str], log: Path) -> int:
        """Start a long-running command in the background and return its pid (the
        command's own: every step of argv() execs the next). Called by short-lived
        processes (testlib/cluster.py's switch), so that the command outlives
        its caller like a service; whoever stops it polls alive()."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.argv(cmd, env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return proc.pid

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    @contextlib.contextmanager
    def lossy(self, probability: float) -> Iterator[None]:
        """Drop each packet the host receives on its link with this probability, until the
        block ends: iptables' statistic match in the host's namespace (the kernel here has
        no netem)."""
        drop = ["-m", "statistic", "--mode", "random", "--probability", str(probability)]
        rules = [["INPUT", "-i", "eth0", *drop, "-j", "DROP"]]
        for rule in rules:
            sh("ip", "netns", "exec", self.ns, "iptables", "-w", "-A", *rule)
        try:
            yield
        finally:
            for rule in rules:
                sh("ip", "netns", "exec", self.ns, "iptables", "-w", "-D", *rule)

    def kill_all(self, sig: signal.Signals = signal.SIGKILL) -> list[int]:
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pids


class Network:
    """The hosts of the address plan on one closed bridge; create(), verify(), destroy()."""

    def __init__(
        self,
        hosts: dict[str, str],
        prefix_length: int,
        work: Path,
        user: User,
        prefix: str | None = None,
        path: str | None = None,
    ) -> None:
        # Unique per run, and naming its creator: destroy_stale() removes those
        # of runs whose process is gone. A given prefix attaches to a network
        # another process created.
        self.prefix = prefix or f"ratesc{os.getpid()}x{secrets.token_hex(2)}"
        self.bridge_ns = f"{self.prefix}-sw"
        self.work = work
        self.user = user
        self.prefix_length = prefix_length
        self.subnet = ipaddress.ip_interface(
            f"{next(iter(hosts.values()))}/{prefix_length}"
        ).network
        self.path = path or os.environ["PATH"]
        self.hosts = {name: Host(self, name, address) for name, address in hosts.items()}

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    @staticmethod
    def destroy_stale() -> list[str]:
        """Remove the namespaces a crashed run left behind (its pid no longer exists)."""
        removed = []
        for entry in ip("netns", "list") or []:
            name = entry["name"]
            if not name.startswith("ratesc") or "x" not in name:
                continue
            pid = name.removeprefix("ratesc").split("x", 1)[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
                for p in out.stdout.split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(p), signal.SIGKILL)
                subprocess.run(["ip", "netns", "delete", name], capture_output=True)
                removed.append(name)
        return removed

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        # No IPv6: no link-local addresses, router solicitations or duplicate
        # address detection; only the plan's IPv4 addresses exist. No forwarding:
        # a new namespace may inherit it from the machine's.
        settings = [f"net.ipv6.conf.{key}.disable_ipv6=1" for key in ("all", "default")]
        # The load opens a new connection per request (testlib/load.py), and the
        # side that closes keeps each port in TIME_WAIT for 60 s: at thousands of
        # requests a second, the default 28,000 ephemeral ports ran out
        # ("Cannot assign requested address"). More ports, none of them a
        # service's (80, 3000, 5432), and TIME_WAIT reused for new outgoing
        # connections (tcp_tw_reuse=1; the default 2 allows it on loopback only).
        # Both are settings of each namespace, not of the machine.
        settings += ["net.ipv4.ip_local_port_range=10000 65000", "net.ipv4.tcp_tw_reuse=1"]
        sh("ip", "netns", "exec", name, "sysctl", "-qw", *settings, "net.ipv4.ip_forward=0")

    def create(self) -> None:
        self._netns(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for host in self.hosts.values():
            self._netns(host.ns)
            port = f"v-{host.name}"
            # Made in the bridge's namespace, its other end moved straight into the
            # host's: no link ever exists in the machine's own namespace.
            veth = f"link add {port} type veth peer name eth0 netns {host.ns}"
            sh("ip", "-n", self.bridge_ns, *veth.split())
            sh("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
            address = f"{host.address}/{self.prefix_length}"
            sh("ip", "-n", host.ns, "addr", "add", address, "dev", "eth0")
            sh("ip", "-n", host.ns, "link", "set", "eth0", "up")
            sh("ip", "-n", host.ns, "link", "set", "lo", "up")
            for sub in ("run", "run/secrets"):
                (host.dir / sub).mkdir(parents=True, exist_ok=True)
        for path in [self.work, *self.work.rglob("*")]:
            os.chown(path, self.user.uid, self.user.gid)
            path.chmod(0o700)

    def allow_low_ports(self, name: str) -> None:
        """Let the user bind ports below 1024 on this host only (the load balancer's 80),
        as NixOS's haproxy unit does with CAP_NET_BIND_SERVICE."""
        sysctl = "net.ipv4.ip_unprivileged_port_start=0"
        sh("ip", "netns", "exec", self[name].ns, "sysctl", "-qw", sysctl)

    def verify(self) -> dict[str, Any]:
        """Check, from the kernel's tables, that the network is closed; return what was checked."""
        bridge_links = {link["ifname"]: link for link in ip("link", "show", netns=self.bridge_ns)}
        assert set(bridge_links) == {"lo", "br0"} | {f"v-{n}" for n in self.hosts}, bridge_links
        assert bridge_links["lo"]["operstate"] == "DOWN"
        assert not any(a.get("addr_info") for a in ip("addr", "show", netns=self.bridge_ns))
        assert not ip("route", "show", "table", "all", netns=self.bridge_ns)

        seen: dict[str, str] = {}
        for host in self.hosts.values():
            port = bridge_links[f"v-{host.name}"]
            assert port.get("master") == "br0", port
            links = {link["ifname"]: link for link in ip("link", "show", netns=host.ns)}
            assert set(links) == {"lo", "eth0"}, (host.name, links)
            eth0 = links["eth0"]
            # The two ends of one veth pair: each names the other's index.
            assert eth0["link_index"] == port["ifindex"], (host.name, eth0, port)
            assert port["link_index"] == eth0["ifindex"], (host.name, eth0, port)
            addresses = {
                a["ifname"]: [f"{i['local']}/{i['prefixlen']}" for i in a["addr_info"]]
                for a in ip("addr", "show", netns=host.ns)
            }
            assert addresses == {
                "lo": ["127.0.0.1/8"],
                "eth0": [f"{host.address}/{self.prefix_length}"],
            }, (host.name, addresses)
            routes = [
                r
                for r in ip("route", "show", "table", "all", netns=host.ns) or []
                if r.get("table") != "local"
            ]
            assert [(r["dst"], r["dev"], r.get("gateway")) for r in routes] == [
                (str(self.subnet), "eth0", None)
            ], (host.name, routes)
            forwarding = subprocess.run(
                ["ip", "netns", "exec", host.ns, "sysctl", "-n", "net.ipv4.ip_forward"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            assert forwarding == "0", (host.name, forwarding)
            assert host.address not in seen, (host.name, seen)
            seen[host.address] = host.name

        # The machine's own namespace: no address in the subnet, no route into it
        # other than its default route (which leads elsewhere: the hosts are not there).
        for a in ip("addr", "show"):
            for i in a.get("addr_info", []):
                if i["family"] == "inet":
                    assert ipaddress.ip_address(i["local"]) not in self.subnet, a
        for r in ip("route", "show", "table", "all") or []:
            dst = r.get("dst", "default")
            if dst != "default" and r.get("type") not in ("broadcast", "local"):
                assert not ipaddress.ip_network(dst, strict=False).overlaps(self.subnet), r
        return {
            "hosts": len(self.hosts),
            "addresses_each_on_own_veth": len(seen),
            "bridge_ports": len(bridge_links) - 2,
            "default_routes": 0,
        }

    def write_on_script(self, path: Path) -> None:
        """An executable `on NAME COMMAND...` that runs COMMAND on a host (RATES_DEPLOY_ON)."""
        cases = "\n".join(
            f'  {name}) exec {shlex.join(host.argv([]))} "$@" ;;'
            for name, host in self.hosts.items()
        )
        path.write_text(
            "#!/bin/sh\n"
            "# Generated by testlib/netns.py for one test run, and removed with it.\n"
            "# on NAME COMMAND...: run COMMAND on host NAME of the test's closed network.\n"
            "set -eu\n"
            "name=$1\nshift\ncase $name in\n"
            f"{cases}\n"
            '  *) echo "on: no host $name" >&2; exit 2 ;;\n'
            "esac\n"
        )
        path.chmod(0o755)

    def destroy(self) -> int:
        """Stop every process on every host, remove the namespaces; how many processes ran."""
        stopped = sum(len(host.kill_all(signal.SIGTERM)) for host in self.hosts.values())
        deadline = time.monotonic() + 20
        while any(alive(p) for h in self.hosts.values() for p in h.pids()):
            if time.monotonic() > deadline:
                for host in self.hosts.values():
                    host.kill_all(signal.SIGKILL)
                break
            time.sleep(0.1)
        for name in [*(h.ns for h in self.hosts.values()), self.bridge_ns]:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        return stopped

    def exists(self) -> list[str]:
        """This network's namespaces that still exist."""
        return [e["name"] for e in ip("netns", "list") or [] if e["name"].startswith(self.prefix)]
