"""Containers for the compose tests: the engine's API, podman as an engine, stand-in images.

The compose tests drive the real Compose tool on docker-compose.yaml, against either
engine: Docker's daemon, or podman's Docker-compatible service. They read what
they check through the Docker Engine API, which both serve on a Unix socket.

Where no registry can be reached and Nix cannot build (this project's CI), the
images are stand-ins made here from the host's own Debian packages:

- rates: built like nix/image.nix, whose settings it reads with nix-instantiate
  (user, command, environment, working directory, port, /tmp): the service's
  Python closure and nothing else, no shell, the console scripts of
  pyproject.toml in /bin, each a wrapper that puts psql on PATH as the Nix
  package's wrappers do. Not the same interpreter (Debian's Python and
  libraries, not nixpkgs'), and PostgreSQL's client is the host's (15).
- postgres: the host's PostgreSQL server (Debian's, 15 on Debian 12) with an
  entry point that honours the official image's contract as far as
  docker-compose.yaml uses it (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE read
  as root, then postgres as user postgres, PGDATA=/var/lib/postgresql/data,
  password authentication over TCP, pg_isready on PATH). Not the official
  image: another major version, another entry point, no initdb scripts. It
  also has the few tools containers/pgpassword.sh uses (sh, ls, od, tr, mv).
- nixos/nix: the official image's layout as far as containers/build-image.sh
  relies on it (root, bash, coreutils and git on PATH through /root/.nix-profile,
  everything under /nix), with a stand-in `nix` (tests/compose/standin/nix.sh)
  that answers `nix build .#image` with an archive of the stand-in rates image.
  Not Nix: nothing is evaluated or built.
- pause (the kubernetes level): the pod sandbox's image, Kubernetes' own pause
  program alone, as .ci/install-kubernetes compiles it.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
import tomllib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testlib import ROOT

# podman settings (Debian 12's podman 4.3, as root) for machines like this
# project's CI: runc, as crun refuses their hybrid cgroup hierarchy ("cgroups
# in hybrid mode not supported"); cgroupfs, as no systemd runs to manage
# cgroups; no default ulimits, as podman's open-files limit for root
# (1048576) is above the hard limit there (setrlimit RLIMIT_NOFILE: operation
# not permitted). Used unless CONTAINERS_CONF names a file of the user's own.
CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
"""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class EngineAPI:
    """The Docker Engine API on a Unix socket (dockerd's, or podman's compatible service)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def _request(self, method: str, path: str, expect: int, timeout: float) -> bytes:
        conn = _UnixHTTPConnection(self.socket_path, timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != expect:
            raise AssertionError(f"{method} {path}: {response.status} {body[:500]!r}")
        return body

    def get(self, path: str, timeout: float = 30) -> Any:
        body = self._request("GET", path, 200, timeout)
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def ping(self) -> bool:
        try:
            return self.get("/_ping", timeout=2) == "OK"
        except OSError:
            return False

    def engine(self) -> str:
        """'podman' or 'docker', from the engine's own /version."""
        components = self.get("/version").get("Components") or []
        return (
            "podman" if any("podman" in c.get("Name", "").lower() for c in components) else "docker"
        )

    def containers(self, project: str) -> list[dict[str, Any]]:
        """Every container of a Compose project, running or not."""
        filters = json.dumps({"label": [f"com.docker.compose.project={project}"]})
        return self.get(f"/containers/json?all=1&filters={urllib.parse.quote(filters)}")

    def inspect(self, container: str) -> dict[str, Any]:
        return self.get(f"/containers/{container}/json")

    def remove_volume(self, name: str) -> None:
        self._request("DELETE", f"/volumes/{urllib.parse.quote(name)}", 204, timeout=60)

    def volumes(self, project: str) -> list[str]:
        filters = json.dumps({"label": [f"com.docker.compose.project={project}"]})
        found = self.get(f"/volumes?filters={urllib.parse.quote(filters)}")
        return sorted(v["Name"] for v in found.get("Volumes") or [])

    def networks(self, project: str) -> list[str]:
        filters = json.dumps({"label": [f"com.docker.compose.project={project}"]})
        return sorted(
            n["Name"] for n in self.get(f"/networks?filters={urllib.parse.quote(filters)}")
        )


def docker_host_socket(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """The Unix socket DOCKER_HOST names (default: Docker's), or None for another transport."""
    host = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def compose_command() -> list[str] | None:
    """Docker Compose v2 or later: the docker CLI's plugin, or the standalone binary."""
    for argv in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(argv[0]) is None:
            continue
        result = subprocess.run(
            [*argv, "version", "--short"], capture_output=True, text=True, timeout=60
        )
        version = result.stdout.strip().removeprefix("v")
        if (
            result.returncode == 0
            and version.split(".")[0].isdigit()
            and int(version.split(".")[0]) >= 2
        ):
            return argv
    return None


def podman_env(work: Path) -> dict[str, str]:
    """The environment for podman commands: the user's CONTAINERS_CONF, or ours."""
    env = dict(os.environ)
    if not env.get("CONTAINERS_CONF"):
        conf = work / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        env["CONTAINERS_CONF"] = str(conf)
    return env


@contextlib.contextmanager
def podman_service(work: Path, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """`podman system service` on a socket of its own; yields the socket and the log."""
    sock = work / "podman.sock"
    log_path = work / "podman-service.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{sock}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        api = EngineAPI(str(sock))
        deadline = time.monotonic() + 60
        while not api.ping():
            if proc.poll() is not None:
                raise AssertionError(f"podman system service exited:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"podman system service did not answer:\n{log_path.read_text()}"
                )
            time.sleep(0.1)
        yield str(sock), log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


class HealthTimer:
    """What podman's systemd timers do, for a host without systemd.

    podman runs a container's health check from a transient systemd timer
    (`podman healthcheck run ID` every interval); with no systemd there is
    none, and a health status would stay "starting" for ever. This thread
    runs that same command at each container's own interval.
    """

    def __init__(self, api: EngineAPI, project: str, env: dict[str, str]) -> None:
        self.api = api
        self.project = project
        self.env = env
        self._intervals: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health-timer", daemon=True)

    def __enter__(self) -> HealthTimer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        due: dict[str, float] = {}
        while not self._stop.wait(0.25):
            try:
                running = [c for c in self.api.containers(self.project) if c["State"] == "running"]
                for container in running:
                    self._tick(container["Id"], due)
            # A container can go between listing and checking; the next tick goes on.
            except (OSError, AssertionError, subprocess.TimeoutExpired):
                continue

    def _tick(self, cid: str, due: dict[str, float]) -> None:
        if cid not in due:
            check = self.api.inspect(cid)["Config"].get("Healthcheck") or {}
            # Nanoseconds; the engine's default is 30 s, and its first run
            # comes one interval after the start.
            interval = (check.get("Interval") or 30_000_000_000) / 1e9
            due[cid] = time.monotonic() + interval if check.get("Test") else float("inf")
            self._intervals[cid] = interval
        if time.monotonic() >= due[cid]:
            subprocess.run(
                ["podman", "healthcheck", "run", cid], env=self.env, capture_output=True, timeout=60
            )
            due[cid] = time.monotonic() + self._intervals[cid]


# --- Stand-in images -----------------------------------------------------------------------


def _elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _put(rootfs: Path, source: Path, target: str) -> None:
    """Copy a file's contents (symlinks followed) to `target` inside rootfs."""
    dest = rootfs / target.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.resolve(), dest)


def _libraries(files: list[Path]) -> set[str]:
    """The shared libraries (and the dynamic loader) that these ELF files load."""
    needed: set[str] = set()
    for path in files:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "not found" in line:
                raise AssertionError(f"{path}: {line.strip()}")
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                needed.add(m.group(1))
    return needed


def _add_libraries(rootfs: Path) -> None:
    elves = [p for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink() and _elf(p)]
    for lib in sorted(_libraries(elves)):
        if not (rootfs / lib.lstrip("/")).exists():
            _put(rootfs, Path(lib), lib)


def _skeleton(rootfs: Path, passwd: str, group: str) -> None:
    """Directories, /lib links (Debian's paths in ldd output), users and name service."""
    for d in ("usr/lib", "usr/lib64", "etc", "var/empty"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    (rootfs / "lib").symlink_to("usr/lib")
    (rootfs / "lib64").symlink_to("usr/lib64")
    (rootfs / "tmp").mkdir(mode=0o1777)
    (rootfs / "tmp").chmod(0o1777)
    (rootfs / "etc/passwd").write_text(passwd)
    (rootfs / "etc/group").write_text(group)
    (rootfs / "etc/nsswitch.conf").write_text("hosts: files dns\n")


def _import(rootfs: Path, tag: str, changes: list[str], env: dict[str, str]) -> None:
    """`podman import` of the root file system, owned by root, with image settings."""
    tarball = rootfs.with_suffix(".tar")

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(tarball, "w") as tar:
        for child in sorted(rootfs.iterdir()):
            tar.add(child, arcname=child.name, filter=as_root)
    argv = ["podman", "import", "--quiet"]
    for change in changes:
        argv += ["--change", change]
    subprocess.run([*argv, str(tarball), tag], env=env, check=True, capture_output=True)
    tarball.unlink()
    shutil.rmtree(rootfs)


def image_settings() -> dict[str, Any]:
    """nix/image.nix's arguments to buildLayeredImage, evaluated with stub inputs."""
    expr = (
        f"import {ROOT / 'nix/image.nix'} {{ dockerTools = {{ buildLayeredImage = a: a; "
        'fakeNss = "fakeNss"; caCertificates = "caCertificates"; }; '
        f'rates = {{ version = "{_project()["version"]}"; }}; }}'
    )
    out = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode", "-E", expr],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def _project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _distributions(name: str) -> list[importlib.metadata.Distribution]:
    """`name` and what it needs at run time, recursively, as installed here."""
    # gunicorn's dependency, so present wherever the service is; imported here
    # so that collecting the tests never needs it.
    from packaging.requirements import Requirement

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [name]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [d for k, d in seen.items() if k != name]


def _install_rates(site: Path) -> None:
    """The project as its build lays it out (pyproject's packages, package-dir, package-data)."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in setup["packages"]:
        source = ROOT / setup["package-dir"][package]
        dest = site / package.replace(".", "/")
        dest.mkdir(parents=True, exist_ok=True)
        for pattern in ["*.py", *setup.get("package-data", {}).get(package, [])]:
            for f in source.glob(pattern):
                shutil.copy2(f, dest / f.name)


def build_rates_image(tag: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """The stand-in for `nix build .#image`; returns nix/image.nix's settings it followed."""
    settings = image_settings()
    config = settings["config"]
    pg_bin = Path(_pg_config("--bindir"))
    rootfs = work / "rates-rootfs"
    _skeleton(
        rootfs,
        # dockerTools.fakeNss (pkgs/build-support/docker/default.nix).
        "root:x:0:0:root user:/var/empty:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/sh\n",
        "root:x:0:\nnobody:x:65534:\n",
    )
    # Debian's interpreter and standard library, as a virtual environment in /opt/rates.
    python = Path(sys.executable).resolve()
    _put(rootfs, python, str(python))
    stdlib = Path(sysconfig.get_path("stdlib"))
    shutil.copytree(
        stdlib,
        rootfs / str(stdlib).lstrip("/"),
        symlinks=True,
        ignore_dangling_symlinks=True,
        ignore=shutil.ignore_patterns(
            "site-packages",
            "dist-packages",
            "test",
            "idlelib",
            "tkinter",
            "turtledemo",
            "ensurepip",
        ),
    )
    venv = rootfs / "opt/rates"
    site = venv / f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin/python").symlink_to(python)
    (venv / "pyvenv.cfg").write_text(
        f"home = {python.parent}\ninclude-system-site-packages = false\n"
    )
    for dist in _distributions("rates"):
        for f in dist.files or []:
            if not str(f).startswith(".."):
                _put(rootfs, Path(f.locate()), str(site.relative_to(rootfs) / f))
    _install_rates(site)
    # Its metadata too, so that the service reports its version (/healthz's
    # Rates-Build) as the Nix package does. Written out rather than copied: the
    # distribution found may be the checkout's rates.egg-info (the root is on
    # sys.path), whose metadata file is PKG-INFO.
    dist = importlib.metadata.distribution("rates")
    metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    assert metadata, f"no metadata in {dist}"
    info = site / f"rates-{dist.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(metadata)
    # psql, which rates-seed runs: on PATH through the wrappers, as in the Nix package.
    _put(rootfs, pg_bin / "psql", str(pg_bin / "psql"))
    # /bin holds the package's console scripts only (buildLayeredImage links
    # the package's bin/ there); no shell anywhere in the image.
    (rootfs / "bin").mkdir()
    for name, entry in _project()["scripts"].items():
        module, function = entry.split(":")
        script = rootfs / "bin" / name
        script.write_text(
            "#!/opt/rates/bin/python\n"
            "import os, sys\n"
            f"os.environ['PATH'] = '{pg_bin}' + os.pathsep + os.environ.get('PATH', '')\n"
            f"from {module} import {function}\n"
            f"sys.exit({function}())\n"
        )
        script.chmod(0o755)
    _add_libraries(rootfs)
    for command in re.findall(r"mkdir -m (\d+) (\S+)", settings.get("extraCommands", "")):
        (rootfs / command[1]).mkdir(exist_ok=True)
        (rootfs / command[1]).chmod(int(command[0], 8))
    assert not any((rootfs / p).exists() for p in ("bin/sh", "usr/bin/sh", "bin/bash")), "a shell"
    changes = [
        f"USER {config['User']}",
        f"WORKDIR {config['WorkingDir']}",
        f"CMD {json.dumps(config['Cmd'])}",
        *(f"ENV {e}" for e in config["Env"]),
        *(f"EXPOSE {p}" for p in config.get("ExposedPorts", {})),
    ]
    _import(rootfs, tag, changes, env)
    return settings


def _pg_config(option: str) -> str:
    return subprocess.run(
        ["pg_config", option], capture_output=True, text=True, check=True
    ).stdout.strip()


def build_postgres_image(tag: str, work: Path, env: dict[str, str]) -> str:
    """The stand-in for the official postgres image; returns its PostgreSQL version."""
    bindir = Path(_pg_config("--bindir"))
    rootfs = work / "postgres-rootfs"
    _skeleton(
        rootfs,
        "root:x:0:0:root:/root:/bin/bash\npostgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "root:x:0:\npostgres:x:999:\nnogroup:x:65534:\n",
    )
    for name in ("postgres", "initdb", "pg_ctl", "pg_isready", "psql"):
        _put(rootfs, bindir / name, str(bindir / name))
    pkglib = Path(_pg_config("--pkglibdir"))
    # JIT's LLVM is 100 MB and optional: PostgreSQL runs without it.
    shutil.copytree(
        pkglib,
        rootfs / str(pkglib).lstrip("/"),
        ignore=shutil.ignore_patterns("llvmjit*", "bitcode"),
    )
    share = Path(_pg_config("--sharedir"))
    shutil.copytree(share, rootfs / str(share).lstrip("/"), symlinks=True)
    tzdata = re.search(r"--with-system-tzdata=(\S+?)'?(?:\s|$)", _pg_config("--configure"))
    if tzdata:
        zoneinfo = Path(tzdata.group(1))
        shutil.copytree(zoneinfo, rootfs / str(zoneinfo).lstrip("/"), symlinks=True)
    # The entry point's tools (initdb and pg_ctl start programs through
    # /bin/sh), and containers/pgpassword.sh's.
    (rootfs / "usr/bin").mkdir(parents=True, exist_ok=True)
    tools = ("bash", "env", "id", "cat", "mkdir", "chown", "chmod", "setpriv")
    for tool in (*tools, "ls", "od", "tr", "mv", "rm", "stat"):
        found = shutil.which(tool)
        assert found, f"{tool} is not installed"
        _put(rootfs, Path(found), f"/usr/bin/{tool}")
    (rootfs / "bin").symlink_to("usr/bin")
    (rootfs / "usr/bin/sh").symlink_to("bash")
    entrypoint = ROOT / "tests/compose/standin/postgres-entrypoint.sh"
    _put(rootfs, entrypoint, "/usr/local/bin/docker-entrypoint.sh")
    for d in ("var/run/postgresql", "var/lib/postgresql/data"):
        (rootfs / d).mkdir(parents=True)
    _add_libraries(rootfs)
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    changes = [
        f"ENV PATH={bindir}:/usr/local/bin:/usr/bin",
        "ENV PGDATA=/var/lib/postgresql/data",
        'ENTRYPOINT ["docker-entrypoint.sh"]',
        'CMD ["postgres"]',
        "STOPSIGNAL SIGINT",
        "EXPOSE 5432",
        "VOLUME /var/lib/postgresql/data",
    ]
    _import(rootfs, tag, changes, env)
    return version


def save_image(tag: str, archive_tag: str, archive: Path, env: dict[str, str]) -> None:
    """`tag` as a gzipped docker-archive named `archive_tag`, the format dockerTools writes."""
    subprocess.run(["podman", "tag", tag, archive_tag], env=env, check=True, capture_output=True)
    plain = archive.with_suffix("")
    try:
        subprocess.run(
            ["podman", "save", "--quiet", "--format", "docker-archive", "-o", plain, archive_tag],
            env=env,
            check=True,
            capture_output=True,
        )
    finally:
        # The archive alone carries the name now: `docker load` must bring it back.
        subprocess.run(["podman", "untag", tag, archive_tag], env=env, capture_output=True)
    with plain.open("rb") as src, gzip.open(archive, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    plain.unlink()


def build_nix_image(tag: str, work: Path, env: dict[str, str], archive: Path) -> None:
    """The stand-in for docker.io/nixos/nix; its `nix build .#image` answers with `archive`."""
    rootfs = work / "nix-rootfs"
    _skeleton(rootfs, "root:x:0:0:System administrator:/root:/bin/sh\n", "root:x:0:\n")
    (rootfs / "root").mkdir(mode=0o700)
    # As in the real image, the tools are under /nix only, reached through
    # /root/.nix-profile: a container sees them only if the volume nix
    # mounted over /nix was filled from the image.
    profile = "/nix/var/nix/profiles/default"
    for tool in ("bash", "git", "gzip", "chmod", "chown", "mv", "mktemp", "stat", "dirname", "rm"):
        found = shutil.which(tool)
        assert found, f"{tool} is not installed"
        _put(rootfs, Path(found), f"{profile}/bin/{tool}")
    _put(rootfs, ROOT / "tests/compose/standin/nix.sh", f"{profile}/bin/nix")
    (rootfs / "root/.nix-profile").symlink_to(profile)
    # /usr/bin/env, as the real image has, for the stand-in nix's #! line.
    env_tool = shutil.which("env")
    assert env_tool, "env is not installed"
    _put(rootfs, Path(env_tool), "/usr/bin/env")
    store = rootfs / "nix/store"
    store.mkdir(parents=True)
    shutil.copy(archive, store / f"{'0' * 32}-docker-image-rates.tar.gz")
    _add_libraries(rootfs)
    changes = [
        "ENV USER=root",
        "ENV PATH=/root/.nix-profile/bin:/nix/var/nix/profiles/default/bin",
        'CMD ["/root/.nix-profile/bin/bash"]',
    ]
    _import(rootfs, tag, changes, env)


def build_pause_image(tag: str, binary: Path, work: Path, env: dict[str, str]) -> None:
    """The pod sandbox's image, as Kubernetes' own (registry.k8s.io/pause): its static
    program alone (build/pause/linux/pause.c, which .ci/install-kubernetes compiles)."""
    rootfs = work / "pause-rootfs"
    rootfs.mkdir()
    _put(rootfs, binary, "/pause")
    _import(rootfs, tag, ['ENTRYPOINT ["/pause"]', "USER 65535:65535"], env)
