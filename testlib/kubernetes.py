"""A real single-node Kubernetes for tests/kubernetes, made here and removed afterwards.

The node is a network namespace on a closed bridge (testlib/netns.py, as the cluster
level's hosts), with an address of its own: the kubelet refuses a loopback node IP.
In it, one process tree in a PID and mount namespace of its own runs etcd, the control
plane, containerd, the kubelet, kube-proxy and CoreDNS; pods get addresses on a bridge
inside the node, and Service addresses exist only in the node's iptables rules. Every
packet stays in these namespaces: kubectl, the load and the checks run in the node's.

Nothing is left on the machine:
- Killing the tree's first process ends the PID namespace, and the kernel kills every
  process in it, containers included. Its mounts (container root file systems, volumes)
  go with its mount namespace; the iptables rules of kube-proxy and the CNI plugin go
  with the node's network namespace.
- Paths the programs cannot be told (the kubelet's /var/lib/kubelet/pki and
  device-plugins, and /var/log/containers; the CNI library's cache in /var/lib/cni;
  containerd's shim sockets in /run/containerd) are tmpfs mounts in the node's mount
  namespace, over the machine's (podman uses /var/lib/cni too). The rest is told to
  use the node's directory, and down() checks that none of their defaults appeared.
- The kubelet sets six kernel-wide sysctls (vm.overcommit_memory, kernel.panic, ...) to
  its own values unless they have them already. In the node's mount namespace those
  /proc/sys files are covered by files that hold its values, so it leaves the
  machine's alone.
- Pod cgroups go under one cgroup of the node's (the kubelet's cgroupRoot), removed
  afterwards, and the node's files under one directory.
- A run that died leaves namespaces, cgroups and files named after its process id;
  destroy_stale() removes those of runs whose process is gone.

The settings this machine needs (cgroup v1, no systemd) are the issue's: the kubelet's
cgroupfs driver without per-QoS cgroups, containerd's restrict_oom_score_adj.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from testlib.netns import Network, User, alive

T = TypeVar("T")

# The release .ci/install-kubernetes builds; any patch release of it will do.
KUBERNETES_MINOR = "v1.34."
COREDNS_VERSION = "1.12.1"
PAUSE_VERSION = "3.10.1"
INSTALL = ".ci/install-kubernetes (builds them from the Go module proxy into /usr/local/bin)"
TOOLS = {
    **dict.fromkeys(
        (
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
            "kubectl",
            "coredns",
        ),
        INSTALL,
    ),
    "etcd": "apt-get install etcd-server",
    "containerd": "apt-get install containerd",
    "ctr": "apt-get install containerd",
    "runc": "apt-get install runc",
    "iptables": "apt-get install iptables",
    "openssl": "apt-get install openssl",
    "nsenter": "apt-get install util-linux",
    "unshare": "apt-get install util-linux",
    "ip": "apt-get install iproute2",
}
# Debian's containernetworking-plugins.
CNI_BIN = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")

# The node's address plan: its own link on the closed bridge; pods and Services
# exist only inside the node's namespace.
NODE_ADDRESS = "10.0.64.10"
NODE_PREFIX_LENGTH = 24
POD_SUBNET = "10.244.0.0/24"
SERVICE_RANGE = "10.96.0.0/24"
API_SERVICE_IP = "10.96.0.1"
NODE_NAME = "rates-node"

# pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables: the values the kubelet
# writes unless the sysctl has them.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# Paths the node's programs use and cannot all be told otherwise (the kubelet's
# certificates and device plugin sockets, its pods' log links; the CNI library's cache;
# the containerd shims' sockets): tmpfs in its mount namespace.
PRIVATE_DIRS = ("/var/lib/kubelet", "/var/log", "/run/containerd", "/var/lib/cni")
# Where Kubernetes' and containerd's programs write by default: none may appear on the
# machine (down() checks).
DEFAULT_PATHS = (
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
    "/var/run/kubernetes",
    "/var/lib/containerd",
    "/run/containerd",
    "/opt/containerd",
    "/opt/cni",
    "/etc/cni/net.d",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "ratesc"
MADE_BY = ".made-by-rates-kubernetes-"


def run_name() -> str:
    """A name for this run's namespaces, cgroups, files and images: this process's id
    and a random part, as testlib/netns.py names its namespaces."""
    return f"{PREFIX}{os.getpid()}x{secrets.token_hex(2)}"


def _dead(name: str) -> bool:
    """Whether NAME (…ratesc<pid>x…) belongs to a run whose process is gone."""
    pid = name.rpartition(PREFIX)[2].split("x", 1)[0]
    return pid.isdigit() and not Path(f"/proc/{pid}").exists()


def _version(path: str) -> str:
    name = Path(path).name
    argv = {
        "kubectl": [path, "version", "--client"],
        "coredns": [path, "-version"],
    }.get(name, [path, "--version"])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except OSError as exc:
        return str(exc)
    return out.strip().splitlines()[0] if out.strip() else ""


def pause_binary() -> Path | None:
    """The pod sandbox's process, which .ci/install-kubernetes puts beside the kubelet."""
    kubelet = shutil.which("kubelet")
    return Path(kubelet).resolve().parents[1] / "libexec/kubernetes/pause" if kubelet else None


def missing() -> list[str]:
    """What this machine lacks to run the node, each with how to install it."""
    path = os.environ.get("PATH", "")
    problems = []
    for tool, how in TOOLS.items():
        found = shutil.which(tool)
        if found is None:
            problems.append(f"{tool} is not on PATH ({path}): {how}")
            continue
        if how == INSTALL:
            version = _version(found)
            wanted = f"v{COREDNS_VERSION}" if tool == "coredns" else KUBERNETES_MINOR
            if wanted not in version.replace("CoreDNS-", "v"):
                # /usr/bin/kubectl may be another program (Google Cloud SDK's dispatcher).
                problems.append(
                    f"{found} reports {version!r}, not {wanted.rstrip('.')}: {how}, "
                    "ahead of it on PATH"
                )
    for plugin in CNI_PLUGINS:
        if not (CNI_BIN / plugin).is_file():
            problems.append(
                f"the CNI plugin {CNI_BIN / plugin} is missing: "
                "apt-get install containernetworking-plugins"
            )
    pause = pause_binary()
    if shutil.which("kubelet") and (pause is None or not pause.is_file()):
        problems.append(f"the pod sandbox's pause program is not at {pause}: {INSTALL}")
    return problems


# --- network namespaces from Python -------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def in_netns(path: str, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) on a thread of its own that joined the network namespace at `path`.

    A network namespace belongs to a thread, not a process: sockets that thread opens
    are the namespace's, and the rest of the test process stays where it was. (Python
    3.12 has os.setns; 3.11 calls libc's.)
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"in-netns-{Path(path).name}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- certificates ---------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)


def _key(name: str, d: Path) -> None:
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        f"{name}.key",
        cwd=d,
    )


def _certificate(name: str, subject: str, d: Path, usage: str, names: tuple[str, ...] = ()) -> None:
    """NAME.key and NAME.crt, signed by ca.crt, for clientAuth or serverAuth."""
    _key(name, d)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    ext = [
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if names:
        ext.append("subjectAltName=" + ",".join(names))
    (d / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=d,
    )


# --- the node ------------------------------------------------------------------------------


class Node:
    """The single-node cluster: up() builds and starts it, down() removes every trace."""

    def __init__(self, name: str, images: dict[str, str], podman_env: dict[str, str]) -> None:
        # run_name(): destroy_stale() finds what a run that died left.
        self.prefix = name
        self.work = Path(tempfile.gettempdir()) / f"rates-kubernetes-{self.prefix}"
        self.net = Network(
            {"node": NODE_ADDRESS},
            NODE_PREFIX_LENGTH,
            self.work / "net",
            User("root", 0, 0),
            prefix=self.prefix,
        )
        self.podman_env = podman_env
        self.ns = self.net["node"].ns
        self.netns_path = f"/run/netns/{self.ns}"
        self.pki = self.work / "pki"
        self.logs = self.work / "logs"
        self.cgroup = f"/{self.prefix}"
        self.socket = self.work / "containerd.sock"
        self.admin = self.work / "admin.kubeconfig"
        self.images = images  # role -> reference, e.g. "pause" -> localhost/pause-...:3.10.1
        self.init: subprocess.Popen[bytes] | None = None
        self.init_pid = 0  # the first process of the node's PID namespace, as the machine sees it
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.made_dirs: list[Path] = []
        self.iptables_before = _iptables_chains()
        self.paths_before = {p for p in DEFAULT_PATHS if Path(p).exists()}

    # -- running things in the node --

    def enter(self) -> list[str]:
        """The prefix that runs a command inside the node: its network, mounts and PIDs."""
        return ["nsenter", f"--target={self.init_pid}", "--net", "--mount", "--pid", "--"]

    def in_net(self) -> list[str]:
        """The prefix that runs a command in the node's network namespace only."""
        return ["nsenter", f"--net={self.netns_path}", "--"]

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.in_net(), "kubectl", f"--kubeconfig={self.admin}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def get(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, decoded."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) with its sockets in the node's network namespace (Service addresses)."""
        return in_netns(self.netns_path, fn, *args)

    def ctr(self, *args: str, timeout: float = 600) -> str:
        return subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout

    def _start(self, name: str, argv: list[str]) -> None:
        self.logs.mkdir(exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [*self.enter(), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait(self, what: str, check: Callable[[], bool], timeout: float = 300) -> float:
        started = time.monotonic()
        while not check():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                        + self.log_tail(name)
                    )
            if time.monotonic() - started > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.5)
        return time.monotonic() - started

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- building it --

    def up(self) -> dict[str, Any]:
        """Build and start the node; return what was checked and measured."""
        started = time.monotonic()
        self.work.mkdir(mode=0o700)
        self.net.create()
        closed = self.net.verify()
        # Bridged pod-to-pod traffic through iptables, so that a reply from a Service's
        # pod on the same bridge is translated back (kube-proxy's requirement).
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                "sysctl",
                "-qw",
                "net.bridge.bridge-nf-call-iptables=1",
            ],
            check=True,
            capture_output=True,
        )
        # The node's own connections to Service addresses (kubectl's checks, the load):
        # a route for connect() to find; kube-proxy's rules then send them to a pod.
        # Nothing for them leaves the node: those addresses exist only in its rules.
        subprocess.run(
            ["ip", "-n", self.ns, "route", "add", SERVICE_RANGE, "dev", "eth0"],
            check=True,
            capture_output=True,
        )
        self._certificates()
        self._configs()
        self._start_init()
        self._start(
            "etcd",
            [
                "etcd",
                "--name=node",
                f"--data-dir={self.work / 'etcd'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=node=http://127.0.0.1:2380",
            ],
        )
        self._wait("etcd", self._etcd_healthy, timeout=120)
        p = self.pki
        self._start(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--advertise-address={NODE_ADDRESS}",
                f"--bind-address={NODE_ADDRESS}",
                "--secure-port=6443",
                "--etcd-servers=http://127.0.0.1:2379",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--anonymous-auth=false",
                "--profiling=false",
                f"--cert-dir={self.work / 'apiserver'}",
            ],
        )
        self._wait("the API server's /readyz", self._apiserver_ready, timeout=300)
        self._start(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={self.work / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--cluster-name=rates-test",
                # Not its default, /usr/libexec/kubernetes/...: it creates the directory.
                f"--flex-volume-plugin-dir={self.work / 'kubelet-plugins'}",
            ],
        )
        self._start(
            "kube-scheduler",
            [
                "kube-scheduler",
                f"--kubeconfig={self.work / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
            ],
        )
        self._start("containerd", ["containerd", f"--config={self.work / 'containerd.toml'}"])
        self._wait("containerd", self._containerd_up, timeout=120)
        import_s = self._import_images()
        self._start(
            "kubelet",
            [
                "kubelet",
                f"--config={self.work / 'kubelet.yaml'}",
                f"--kubeconfig={self.work / 'kubelet.kubeconfig'}",
                f"--node-ip={NODE_ADDRESS}",
                f"--hostname-override={NODE_NAME}",
            ],
        )
        self._start("kube-proxy", ["kube-proxy", f"--config={self.work / 'kube-proxy.yaml'}"])
        self._start("coredns", ["coredns", f"-conf={self.work / 'Corefile'}"])
        self._wait("the node to register", self._node_registered, timeout=300)
        self.kubectl(
            "wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=300s", timeout=320
        )
        return {
            **closed,
            "ready_after_s": round(time.monotonic() - started, 1),
            "images_imported_s": round(import_s, 1),
            "node_rss_mib": self.rss_mib(),
        }

    def _start_init(self) -> None:
        """The node's first process, in new PID and mount namespaces inside its network one."""
        for d in PRIVATE_DIRS:
            if not Path(d).exists():
                Path(d).mkdir(parents=True)
                # Under the tmpfs, on the machine: says whose the directory is, so
                # that destroy_stale() removes it after a run that died.
                (Path(d) / f"{MADE_BY}{self.prefix}").touch()
                self.made_dirs.append(Path(d))
        self.init = subprocess.Popen(
            [
                *self.in_net(),
                "unshare",
                # Its child, the node's PID 1, dies with it.
                "--kill-child",
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--propagation=private",
                "sleep",
                "infinity",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # nsenter execs unshare, whose child (the sleep) is PID 1 inside.
        deadline = time.monotonic() + 30
        children = Path(f"/proc/{self.init.pid}/task/{self.init.pid}/children")
        while not self.init_pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.init_pid = int(children.read_text().split()[0])
            if self.init_pid or self.init.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError("the node's first process did not start")
            time.sleep(0.05)
        assert self.init_pid, f"unshare exited with {self.init.returncode}"
        mounts = [["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d] for d in PRIVATE_DIRS]
        sysctls = self.work / "sysctl"
        sysctls.mkdir()
        for name, value in KUBELET_SYSCTLS.items():
            (sysctls / name.replace("/", ".")).write_text(value + "\n")
            mounts.append(
                ["mount", "--bind", str(sysctls / name.replace("/", ".")), f"/proc/sys/{name}"]
            )
        for argv in mounts:
            subprocess.run([*self.enter(), *argv], check=True, capture_output=True, text=True)

    def _etcd_healthy(self) -> bool:
        def health() -> bool:
            try:
                with urllib.request.urlopen("http://127.0.0.1:2379/health", timeout=2) as r:
                    return json.loads(r.read()).get("health") == "true"
            except OSError:
                return False

        return self.call(health)

    def _apiserver_ready(self) -> bool:
        return self.kubectl("get", "--raw=/readyz", check=False, timeout=30).returncode == 0

    def _containerd_up(self) -> bool:
        if not self.socket.exists():
            return False
        result = subprocess.run(
            ["ctr", f"--address={self.socket}", "version"], capture_output=True, timeout=30
        )
        return result.returncode == 0

    def _node_registered(self) -> bool:
        return self.kubectl("get", "node", NODE_NAME, check=False).returncode == 0

    def _import_images(self) -> float:
        """The stand-in images from podman into containerd's k8s.io namespace."""
        started = time.monotonic()
        archive = self.work / "images.tar"
        subprocess.run(
            [
                "podman",
                "save",
                "--quiet",
                "--multi-image-archive",
                "--format=docker-archive",
                f"--output={archive}",
                *self.images.values(),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
            env=self.podman_env,
        )
        self.ctr("images", "import", str(archive))
        archive.unlink()
        listed = self.ctr("images", "list", "--quiet").split()
        absent = [ref for ref in self.images.values() if ref not in listed]
        assert not absent, f"not in containerd after the import: {absent} (it has {listed})"
        return time.monotonic() - started

    def _certificates(self) -> None:
        d = self.pki
        d.mkdir(parents=True)
        _key("ca", d)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=rates-test-ca",
            "-days",
            "2",
            "-out",
            "ca.crt",
            cwd=d,
        )
        api_names = (
            f"IP:{NODE_ADDRESS}",
            f"IP:{API_SERVICE_IP}",
            "IP:127.0.0.1",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        )
        _certificate("apiserver", "/CN=kube-apiserver", d, "serverAuth", api_names)
        for name, subject in {
            "apiserver-kubelet": "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "admin": "/O=system:masters/CN=rates-test-admin",
            "controller-manager": "/CN=system:kube-controller-manager",
            "scheduler": "/CN=system:kube-scheduler",
            "kubelet": f"/O=system:nodes/CN=system:node:{NODE_NAME}",
            "kube-proxy": "/CN=system:kube-proxy",
        }.items():
            _certificate(name, subject, d, "clientAuth")
        _key("sa", d)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)

    def _kubeconfig(self, name: str) -> Path:
        path = self.work / f"{name}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "rates-test",
                    "cluster": {
                        "server": f"https://{NODE_ADDRESS}:6443",
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": name,
                    "user": {
                        "client-certificate": str(self.pki / f"{name}.crt"),
                        "client-key": str(self.pki / f"{name}.key"),
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": "rates-test", "user": name}}],
            "current-context": name,
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def _configs(self) -> None:
        w = self.work
        for name in ("admin", "controller-manager", "scheduler", "kubelet", "kube-proxy"):
            self._kubeconfig(name)
        (w / "cni").mkdir()
        (w / "cni" / "10-rates.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "rates-pods",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "dataDir": str(w / "cni-ipam"),
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                            },
                        }
                    ],
                },
                indent=2,
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (w / "containerd.toml").write_text(
            f"""version = 2
root = "{w / "containerd"}"
# tmpfs in the node's mount namespace (PRIVATE_DIRS), where the shims' sockets go too.
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{w / "containerd-opt"}"
[{cri}]
  sandbox_image = "{self.images["pause"]}"
  # runc cannot lower oom_score_adj here: "nsexec: failed to update
  # /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{w / "cni"}"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
"""
        )
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_ADDRESS,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            # cgroup v1 without systemd (the settings).
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "cgroupRoot": self.cgroup,
            "failSwapOn": False,
            "clusterDomain": "cluster.local",
            "clusterDNS": [NODE_ADDRESS],
            # No resolver of the machine's in the pods: cluster names only.
            "resolvConf": "",
            "volumePluginDir": str(w / "kubelet-plugins"),
            # The stand-in images cannot be pulled again: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # The machine's disk and memory are shared: evict only in earnest.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "maxPods": 30,
        }
        (w / "kubelet.yaml").write_text(json.dumps(kubelet, indent=2))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(w / "kube-proxy.kubeconfig")},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # Connection tracking is the machine's (its table size) or the namespace's:
            # left as it is.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
        }
        (w / "kube-proxy.yaml").write_text(json.dumps(proxy, indent=2))
        # Cluster names only: no upstream resolver, so no other name resolves.
        (w / "Corefile").write_text(
            f""".:53 {{
    bind {NODE_ADDRESS}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.admin} admin
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        )

    # -- what it runs --

    def processes(self) -> list[int]:
        """Every process of the node: its own (in its network namespace) and its containers'."""
        pids = set(self.net["node"].pids())
        for path in _cgroup_dirs(self.prefix):
            procs = path / "cgroup.procs"
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)

    def rss_mib(self) -> int:
        total = 0
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total // 1024

    # -- removing it --

    def down(self) -> dict[str, Any]:
        """Stop every process of the node and remove everything it made; what was left."""
        for pid in (self.init_pid, self.init.pid if self.init else 0):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(alive(p) for p in self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for proc in [*self.procs.values(), *([self.init] if self.init else [])]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        self.net.destroy()
        cgroups = _remove_cgroups(self.prefix)
        for d in reversed(self.made_dirs):
            with contextlib.suppress(OSError):
                (d / f"{MADE_BY}{self.prefix}").unlink()
                d.rmdir()
        mounts = [
            line
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(self.work) in line
        ]
        shutil.rmtree(self.work, ignore_errors=True)
        added_chains = sorted(_iptables_chains() - self.iptables_before)
        return {
            "namespaces": self.net.exists(),
            "processes": [p for p in self.processes() if alive(p)],
            "cgroups": cgroups,
            "mounts": mounts,
            # kube-proxy's and the kubelet's (podman, which may run beside, adds CNI-*).
            "iptables_chains": [c for c in added_chains if c.startswith("KUBE-")],
            "files": self.work.exists(),
            "default_paths": [
                p for p in DEFAULT_PATHS if Path(p).exists() and p not in self.paths_before
            ],
        }


def _cgroup_dirs(prefix: str) -> list[Path]:
    """The node's cgroups in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        top = hierarchy / prefix
        if top.is_dir():
            found.extend(
                sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            )
            found.append(top)
    return found


def _remove_cgroups(prefix: str) -> list[str]:
    """rmdir the node's cgroups (their processes are gone); the ones that remain."""
    deadline = time.monotonic() + 30
    while True:
        left = []
        for path in _cgroup_dirs(prefix):
            try:
                path.rmdir()
            except OSError:
                left.append(str(path))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _iptables_chains() -> set[str]:
    """The chains of the machine's own iptables tables (kube-proxy's must never be here)."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}


def destroy_stale(podman_env: dict[str, str]) -> list[str]:
    """What runs that died left (their process is gone): namespaces (and with them every
    process of their node), cgroups, directories, files and stand-in images."""
    removed = Network.destroy_stale()
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        for top in hierarchy.glob(f"{PREFIX}*x*"):
            if _dead(top.name) and not _remove_cgroups(top.name):
                removed.append(str(top))
    for d in map(Path, PRIVATE_DIRS):
        for marker in d.glob(f"{MADE_BY}*"):
            if _dead(marker.name):
                marker.unlink()
                with contextlib.suppress(OSError):
                    d.rmdir()
                removed.append(str(d))
    for work in Path(tempfile.gettempdir()).glob(f"rates-kubernetes-*{PREFIX}*x*"):
        if _dead(work.name):
            shutil.rmtree(work, ignore_errors=True)
            removed.append(str(work))
    images = subprocess.run(
        ["podman", "images", "--format={{.Repository}}:{{.Tag}}"],
        env=podman_env,
        capture_output=True,
        text=True,
    ).stdout.split()
    stale = [i for i in images if "-standin-" in i and PREFIX in i and _dead(i.split(":")[0])]
    if stale:
        subprocess.run(["podman", "rmi", "--force", *stale], env=podman_env, capture_output=True)
        removed.extend(stale)
    return removed
