"""docker-compose.yaml run by the real Compose tool as the README runs it, from the environment.

Two ways to run, chosen by the environment:

- RATES_IMAGE set (the GitHub workflow, after `nix build .#image` and
  `docker load`): the real images on the engine DOCKER_HOST names (Docker's
  socket by default), PostgreSQL's image from RATES_POSTGRES_IMAGE or
  docker-compose.yaml's default.
- RATES_IMAGE unset (.ci/run, as root): stand-in images made here from the
  host's Debian packages (testlib/containers.py says what they share
  with the real ones), on rootful podman through its Docker-compatible API.

Either way Docker Compose v2 (or later) runs docker-compose.yaml unchanged, and the
tests read what they check through the Docker Engine API. Each test has a
project of its own (containers, network, volumes) on a free port, removed
afterwards whatever happened; the stand-in images and podman's service last
for the module and go with it. No test prepares anything on the host: the
stack makes its own password.

The path for a machine without Nix (`docker compose run --rm build-image`, then
`docker load -i`) runs here on a stand-in nixos/nix image; the GitHub
workflow's docker-only job runs it with the real one.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testlib import containers
from testlib.data import CONTRACT, REFERENCE_DUMP
from testlib.figures import figures
from testlib.postgres import free_port
from testlib.sample import JANUARY, JANUARY_BODY
from testlib.serve import check_contract, get, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
SECRET = "/run/secrets/pgpassword"  # pragma: allowlist secret (a path)
REAL_IMAGES = bool(os.environ.get("RATES_IMAGE"))


@dataclass
class Engine:
    """Where the stacks run: the Compose command, the engine's socket, the images."""

    compose: list[str]
    socket: str
    images: dict[str, str]
    # podman's health checks need systemd's timers; without systemd the
    # tests run them (containers.HealthTimer).
    timer_env: dict[str, str] | None
    logs: list[Path] = field(default_factory=list)
    # The stand-in images' podman: its environment and a work directory.
    podman_env: dict[str, str] | None = None
    work: Path | None = None

    @property
    def api(self) -> containers.EngineAPI:
        return containers.EngineAPI(self.socket)


def _real_engine(compose: list[str]) -> Iterator[Engine]:
    sock = containers.docker_host_socket(os.environ)
    if sock is None or not containers.EngineAPI(sock).ping():
        pytest.skip(f"no container engine answers on {sock or os.environ.get('DOCKER_HOST')}")
    api = containers.EngineAPI(sock)
    no_systemd = not Path("/run/systemd/system").is_dir()
    timer = dict(os.environ) if api.engine() == "podman" and no_systemd else None
    images = {"RATES_IMAGE": os.environ["RATES_IMAGE"]}
    if os.environ.get("RATES_POSTGRES_IMAGE"):
        images["RATES_POSTGRES_IMAGE"] = os.environ["RATES_POSTGRES_IMAGE"]
    yield Engine(compose, sock, images, timer)


def _standin_engine(compose: list[str]) -> Iterator[Engine]:
    for tool, install in (
        ("podman", "apt-get install podman runc golang-github-containernetworking-plugin-dnsname"),
        (
            "nix-instantiate",
            "apt-get install nix-bin (it reads the image's settings from nix/image.nix)",
        ),
        ("pg_config", "apt-get install libpq-dev postgresql"),
    ):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: {install}")
    if os.geteuid() != 0:
        pytest.skip(
            "the stand-in images run on rootful podman: run this level as root "
            "(.ci/run does), or set RATES_IMAGE to test real images on Docker"
        )
    work = Path(tempfile.mkdtemp(prefix="rates-compose-"))
    run_id = uuid.uuid4().hex[:10]
    images = {
        "RATES_IMAGE": f"localhost/rates-standin-{run_id}:latest",
        "RATES_POSTGRES_IMAGE": f"localhost/postgres-standin-{run_id}:latest",
    }
    env = containers.podman_env(work)
    try:
        started = time.monotonic()
        containers.build_rates_image(images["RATES_IMAGE"], work, env)
        pg_version = containers.build_postgres_image(images["RATES_POSTGRES_IMAGE"], work, env)
        figures(
            "stand-in images built (rates from nix/image.nix's settings)",
            seconds=f"{time.monotonic() - started:.1f}",
            postgres=pg_version,
        )
        with containers.podman_service(work, env) as (sock, log):
            no_systemd = not Path("/run/systemd/system").is_dir()
            yield Engine(compose, sock, images, env if no_systemd else None, [log], env, work)
    finally:
        subprocess.run(
            ["podman", "rmi", "--force", *images.values()],
            env=env,
            capture_output=True,
            timeout=300,
        )
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    compose = containers.compose_command()
    if compose is None:
        pytest.skip(
            "Docker Compose v2 is not installed: .ci/install-docker-compose builds it from "
            "source (Go), or install Docker's compose plugin"
        )
    yield from (_real_engine(compose) if REAL_IMAGES else _standin_engine(compose))


class Stack:
    """One Compose project: `docker compose` with this stack's environment."""

    def __init__(self, engine: Engine, base: Path, checkout: Path = ROOT) -> None:
        self.engine = engine
        self.project = f"rates-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The test's own files (dumps); nothing of the stack's.
        self.work = base / "work"
        self.work.mkdir(parents=True)
        self.checkout = checkout
        # Every variable docker-compose.yaml reads is set, so that a developer's .env
        # beside it changes nothing here (the environment wins over .env).
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{engine.socket}",
            "COMPOSE_PROJECT_NAME": self.project,
            "RATES_POSTGRES_IMAGE": "",
            "RATES_NIX_IMAGE": "",
            **engine.images,
            "RATES_HOST": "127.0.0.1",
            "RATES_PORT": str(self.port),
            "RATES_DUMP": "",
        }
        self.outputs: list[str] = []

    def compose(
        self, *args: str, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.engine.compose, "--file", str(self.checkout / COMPOSE_FILE.name), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.outputs.append(
            f"$ compose {' '.join(args)}  (exit {result.returncode})\n"
            f"{result.stdout}{result.stderr}"
        )
        if check:
            assert result.returncode == 0, self.outputs[-1]
        return result

    def up(self, **env: str) -> subprocess.CompletedProcess[str]:
        """The README's command: start everything, return once it is healthy (or failed)."""
        return self.compose("up", "--detach", "--wait", "--wait-timeout", "300", check=False, **env)

    def containers(self) -> dict[str, dict[str, Any]]:
        """Each service's container, inspected, by service name."""
        api = self.engine.api
        return {
            c["Labels"]["com.docker.compose.service"]: api.inspect(c["Id"])
            for c in api.containers(self.project)
            if c["Labels"].get("com.docker.compose.oneoff", "False") == "False"
        }

    def logs(self, service: str = "") -> str:
        args = ["logs", "--no-color", "--no-log-prefix", *([service] if service else [])]
        return self.compose(*args).stdout

    def password(self) -> str:
        """The password the stack made, read where PostgreSQL's entry point reads it."""
        return self.compose("exec", "-T", "postgres", "cat", SECRET).stdout.strip()

    def psql(self, sql: str) -> str:
        """A query in the PostgreSQL container, over its socket (the image's local trust)."""
        return self.compose(
            "exec", "-T", "postgres", "psql", "-X", "-qAt", "-U", "rates", "-d", "rates", "-c", sql
        ).stdout.strip()


@pytest.fixture
def make_stack(engine: Engine, failed: Callable[[], bool]) -> Iterator[Callable[..., Stack]]:
    """Stacks of the test's own; each removed with its volume and shown if the test failed."""
    stacks: list[Stack] = []
    base = Path(tempfile.mkdtemp(prefix="rates-stack-"))

    def make(checkout: Path = ROOT) -> Stack:
        stacks.append(Stack(engine, base / str(len(stacks)), checkout))
        return stacks[-1]

    try:
        yield make
    finally:
        for stack in stacks:
            if failed():
                print(f"--- {stack.project}: compose output ---")
                print("\n".join(stack.outputs))
                with_logs = stack.compose("logs", "--no-color", "--timestamps", check=False)
                print(f"--- {stack.project}: logs ---\n{with_logs.stdout}{with_logs.stderr}")
            # With the profile build, so that the volume nix goes too.
            down = ["--profile", "build", "down", "--volumes", "--remove-orphans"]
            stack.compose(*down, "--timeout", "10", check=False)
            api = engine.api
            assert api.containers(stack.project) == [], "containers left behind"
            assert api.volumes(stack.project) == [], "volumes left behind"
            assert api.networks(stack.project) == [], "networks left behind"
        if failed():
            for log in engine.logs:
                print(f"--- {log} (last 50 lines) ---")
                print("\n".join(log.read_text(errors="replace").splitlines()[-50:]))
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def health_checks(engine: Engine, stack: Stack) -> Iterator[Stack]:
    """The stack with its health checks run: by the engine, or where it cannot, by the test."""
    if engine.timer_env is None:
        yield stack
    else:
        with containers.HealthTimer(engine.api, stack.project, engine.timer_env):
            yield stack


@pytest.fixture
def stack(make_stack: Callable[..., Stack], engine: Engine) -> Iterator[Stack]:
    with health_checks(engine, make_stack()) as s:
        yield s


def status_of(pid: int, field: str) -> str:
    """A field of /proc/PID/status (readable by every user), as the kernel sees the process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return value.strip()
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def assert_started_in_order(output: str, project: str) -> None:
    """Compose's own account of the start: password, PostgreSQL, seed, API, each after the last."""
    events = [
        f"Container {project}-pgpassword-1  Exited",
        f"Container {project}-postgres-1  Starting",
        f"Container {project}-postgres-1  Healthy",
        f"Container {project}-seed-1  Starting",
        f"Container {project}-seed-1  Exited",
        f"Container {project}-api-1  Starting",
    ]
    positions = [output.find(e) for e in events]
    assert -1 not in positions and positions == sorted(positions), (events, output)


def test_stack_lifecycle(stack: Stack) -> None:
    """From nothing (no password, no volume, nothing on the host) to serving, and back."""
    started = time.monotonic()
    first = stack.up()
    assert first.returncode == 0, stack.outputs[-1]
    figures("compose up --wait on an empty volume", seconds=f"{time.monotonic() - started:.1f}")
    assert_started_in_order(first.stdout + first.stderr, stack.project)

    # Readiness as the health checks saw it: PostgreSQL answers over TCP, the
    # API's probe (exec form: the image has no shell) got /readyz's 200.
    c = stack.containers()
    assert set(c) == {"pgpassword", "postgres", "seed", "api"}
    assert (c["pgpassword"]["State"]["Status"], c["pgpassword"]["State"]["ExitCode"]) == (
        "exited",
        0,
    )
    assert stack.logs("pgpassword") == "pgpassword: made a new password in the volume secrets\n"
    assert c["postgres"]["State"]["Health"]["Status"] == "healthy"
    assert c["api"]["State"]["Health"]["Status"] == "healthy"
    probe = c["api"]["State"]["Health"]["Log"][-1]
    assert (probe["ExitCode"], probe["Output"].strip()) == (
        0,
        "rates-probe: http://127.0.0.1:3000/readyz: 200 ready",
    )
    assert (c["seed"]["State"]["Status"], c["seed"]["State"]["ExitCode"]) == ("exited", 0)
    seed_log = stack.logs("seed")
    assert re.fullmatch(
        r"rates-seed: loading the sample data \(57000 prices\) \(sha256 [0-9a-f]{12}\)\n"
        r"rates-seed: loaded 20 regions, 150 ports and 57000 prices in [0-9.]+ s\n",
        seed_log,
    ), seed_log

    # The API on the published port, with the sample's known answer.
    assert get(stack.url + JANUARY) == (200, JANUARY_BODY)

    # The API runs as the image's non-root user, hardened as docker-compose.yaml says.
    api = c["api"]
    assert api["Config"]["User"] == "65534:65534"
    master = api["State"]["Pid"]

    # Healthy means one worker answered; gunicorn forks the second alongside.
    def both_workers() -> list[int] | None:
        found = children(master)
        return found if len(found) >= 2 else None

    workers = wait_until(both_workers, "both gunicorn workers", timeout=30)
    assert len(workers) == 2
    for pid in [master, *workers]:
        # Real and effective user, no capability even in the bounding set, and
        # no way to gain privileges (setuid files mean nothing).
        assert status_of(pid, "Uid").split() == ["65534"] * 4
        assert (status_of(pid, "CapBnd"), status_of(pid, "NoNewPrivs")) == ("0" * 16, "1")
    assert api["HostConfig"]["ReadonlyRootfs"] is True

    # The password, made by the stack: a file that root (PostgreSQL's entry
    # point) and the rates image's user read, and no one else; in no
    # container's settings, no log and no `compose config`.
    password = stack.password()
    assert re.fullmatch(r"[0-9a-f]{48}", password), "48 hex digits"
    mode = stack.compose("exec", "-T", "postgres", "stat", "-c", "%a %u %g", SECRET).stdout
    assert mode == "440 0 65534\n"
    for service, inspected in c.items():
        settings = json.dumps(inspected)
        assert password not in settings, f"the password is in {service}'s settings"
    assert f"PGPASSWORD_FILE={SECRET}" in api["Config"]["Env"]
    assert password not in stack.logs()
    assert password not in stack.compose("config").stdout

    # The stack's state is in its volumes only: nothing it keeps is on the host
    # (so `rm -rf .state`, the local stack's fresh start, cannot touch it). The
    # host gives the seed its dump (here none: /dev/null) and the password's
    # one-shot its script, read-only.
    assert mounts(c) == {
        "pgpassword": [
            ("bind", str(ROOT / "containers/pgpassword.sh"), "/run/rates/pgpassword.sh", False),
            ("volume", f"{stack.project}_postgres-data", "/var/lib/postgresql/data", False),
            ("volume", f"{stack.project}_secrets", "/run/secrets", True),
        ],
        "postgres": [
            ("volume", f"{stack.project}_postgres-data", "/var/lib/postgresql/data", True),
            ("volume", f"{stack.project}_secrets", "/run/secrets", False),
        ],
        "seed": [
            ("bind", "/dev/null", "/run/rates/dump.sql", False),
            ("volume", f"{stack.project}_secrets", "/run/secrets", False),
        ],
        "api": [("volume", f"{stack.project}_secrets", "/run/secrets", False)],
    }

    # A second `up` loads nothing and keeps the password: the one-shots run
    # again and find both.
    assert stack.up().returncode == 0, stack.outputs[-1]
    assert stack.logs("seed").count("rates-seed: nothing to do: the database already holds") == 1
    assert stack.logs("pgpassword").splitlines()[-1] == (
        "pgpassword: kept the password in the volume secrets"
    )
    assert stack.password() == password
    assert get(stack.url + JANUARY) == (200, JANUARY_BODY)

    # `down` removes the containers and keeps the data and its password.
    stack.compose("down")
    assert stack.engine.api.containers(stack.project) == []
    assert stack.engine.api.volumes(stack.project) == [
        f"{stack.project}_postgres-data",
        f"{stack.project}_secrets",
    ]
    started = time.monotonic()
    assert stack.up().returncode == 0, stack.outputs[-1]
    figures("compose up --wait on the kept volume", seconds=f"{time.monotonic() - started:.1f}")
    seed_log = stack.logs("seed")
    assert seed_log.startswith(
        "rates-seed: nothing to do: the database already holds the sample data"
    )
    assert "loading" not in seed_log
    assert stack.password() == password
    assert get(stack.url + JANUARY) == (200, JANUARY_BODY)

    # `down -v` removes both.
    stack.compose("down", "--volumes")
    assert stack.engine.api.containers(stack.project) == []
    assert stack.engine.api.volumes(stack.project) == []


def mounts(inspected: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, str, str, bool]]]:
    """Each container's mounts: type, volume name or host path, path inside, writable."""
    return {
        service: sorted(
            (m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"])
            for m in c["Mounts"]
        )
        for service, c in inspected.items()
    }


def test_a_lost_password_stops_the_stack_saying_why(stack: Stack) -> None:
    """Data kept without its password (its volume removed alone): the first step says so."""
    assert stack.up().returncode == 0, stack.outputs[-1]
    stack.compose("down")
    stack.engine.api.remove_volume(f"{stack.project}_secrets")

    refused = stack.up()
    assert refused.returncode == 1
    assert 'service "pgpassword" didn\'t complete successfully: exit 1' in (
        refused.stdout + refused.stderr
    )
    assert stack.logs("pgpassword") == (
        "pgpassword: the volume postgres-data holds a database, "
        "but the volume secrets has no password for it\n"
        "pgpassword: to start afresh: docker compose down -v "
        "(deletes the data; the next up loads it again)\n"
    )
    # Nothing after it started: no PostgreSQL with a password it does not have.
    c = stack.containers()
    assert {s: c[s]["State"]["Status"] for s in ("postgres", "seed", "api")} == dict.fromkeys(
        ("postgres", "seed", "api"), "created"
    )

    # What it says to do works.
    stack.compose("down", "--volumes")
    assert stack.up().returncode == 0, stack.outputs[-1]
    assert get(stack.url + JANUARY) == (200, JANUARY_BODY)


def new_dump(stack: Stack) -> tuple[Path, str]:
    """A dump other than the sample: the reference dump, or another sample where it is absent."""
    if REFERENCE_DUMP.is_file():
        return REFERENCE_DUMP, "20 regions, 143 ports and 56689 prices"
    dump = stack.work / "other.sql"
    subprocess.run(
        [sys.executable, "-m", "rates.sample", "--prices", "5000", "--seed", "7", "-o", dump],
        check=True,
    )
    dump.chmod(0o644)  # read in the container by the image's user
    return dump, "20 regions, 150 ports and 5000 prices"


def test_a_new_dump_is_refused_until_replaced(stack: Stack) -> None:
    """The seed's rules under Compose: other data is refused; `run ... --replace` replaces it."""
    dump, rows = new_dump(stack)
    sha = hashlib.sha256(dump.read_bytes()).hexdigest()
    assert stack.up().returncode == 0, stack.outputs[-1]

    refused = stack.up(RATES_DUMP=str(dump))
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1
    assert 'service "seed" didn\'t complete successfully: exit 3' in output
    seed_log = stack.logs("seed")
    assert re.fullmatch(
        r"rates-seed: refused: the database holds the sample data \(57000 prices\) "
        r"\(sha256 [0-9a-f]{12}\); to load /run/rates/dump.sql instead: rates-seed --replace\n",
        seed_log,
    ), seed_log
    if f"Container {stack.project}-api-1  Recreate" in output:
        # podman 4.3's compatible API names networks where Docker gives IDs,
        # so Compose takes every running container for detached and recreates
        # it on each `up`: the new API then waits for the seed, in vain.
        assert not stack.containers()["api"]["State"]["Running"]
    else:
        # Docker: the running API is left alone and goes on serving the old data.
        assert get(stack.url + JANUARY) == (200, JANUARY_BODY)

    # Asked for: the README's command, with the same environment.
    replaced = stack.compose("run", "--rm", "seed", "rates-seed", "--replace", RATES_DUMP=str(dump))
    assert re.search(
        rf"^rates-seed: loaded {rows} in [0-9.]+ s$", replaced.stdout + replaced.stderr, re.M
    ), stack.outputs[-1]
    assert stack.psql("SELECT sha256 FROM rates_seed") == sha

    # From now on this dump is what is loaded: `up` with it loads nothing, and
    # the API answers from it.
    assert stack.up(RATES_DUMP=str(dump)).returncode == 0, stack.outputs[-1]
    last = stack.logs("seed").splitlines()[-1]
    assert last.startswith(
        "rates-seed: nothing to do: the database already holds /run/rates/dump.sql "
        f"(sha256 {sha[:12]})"
    ), last
    if dump == REFERENCE_DUMP:
        check_contract(stack.url, json.loads(CONTRACT.read_text()))
    else:
        # No reference dump here (../shared/data): the answer changed with the data.
        status, body = get(stack.url + JANUARY)
        assert status == 200 and body != JANUARY_BODY, body


@pytest.fixture(scope="module")
def nix_standin(engine: Engine) -> Iterator[tuple[dict[str, str], Path]]:
    """The stand-in nixos/nix image and the name its `nix build .#image` loads as; the archive."""
    if engine.podman_env is None or engine.work is None:
        pytest.skip(
            "the path without Nix runs here on a stand-in nixos/nix image, made with podman "
            "(unset RATES_IMAGE); with the real one, the GitHub workflow's docker-only job runs it"
        )
    run_id = uuid.uuid4().hex[:10]
    names = {
        "RATES_NIX_IMAGE": f"localhost/nix-standin-{run_id}:latest",
        # Not in the engine until `docker load` puts it there.
        "RATES_IMAGE": f"localhost/rates-loaded-{run_id}:latest",
    }
    archive = engine.work / "docker-image-rates.tar.gz"
    try:
        containers.save_image(
            engine.images["RATES_IMAGE"], names["RATES_IMAGE"], archive, engine.podman_env
        )
        containers.build_nix_image(
            names["RATES_NIX_IMAGE"], engine.work, engine.podman_env, archive
        )
        yield names, archive
    finally:
        archive.unlink(missing_ok=True)
        subprocess.run(
            ["podman", "rmi", "--force", *names.values()],
            env=engine.podman_env,
            capture_output=True,
            timeout=300,
        )


def checkout_copy(dest: Path, owner: int) -> Path:
    """The working tree with its .git, as a user's clone: no venv, state or build output."""
    shutil.copytree(
        ROOT,
        dest,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv", ".state", "rates-image.tar*", "__pycache__", "*_cache", "result*"
        ),
    )
    for path in [dest, *dest.rglob("*")]:
        os.lchown(path, owner, owner)
    return dest


def load(engine: Engine, stack: Stack, archive: Path) -> str:
    """docs/containers.md's `docker load -i`, or its Podman form where the docker CLI is missing."""
    env: dict[str, str] | None
    if shutil.which("docker"):
        argv, env = ["docker", "load", "-i", str(archive)], stack.env
    else:
        argv, env = ["podman", "load", "-i", str(archive)], engine.podman_env
    loaded = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr
    return loaded.stdout


def test_without_nix(
    engine: Engine,
    make_stack: Callable[..., Stack],
    nix_standin: tuple[dict[str, str], Path],
    tmp_path: Path,
) -> None:
    """docs/containers.md's three commands for Docker alone, in a clone owned by its user."""
    # A host user's checkout, not the container's root: git and Nix refuse
    # such a repository unless told it is safe (containers/build-image.sh).
    nobody = 65534
    checkout = checkout_copy(tmp_path / "rates", owner=nobody)
    stack = make_stack(checkout)
    images, store_archive = nix_standin
    stack.env.update(images)

    # The container's root sees the clone as another user's: left alone, git
    # (and Nix, through libgit2) refuses it. Without --rm: podman 4.3 then
    # reports the exit status, which with --rm it loses (Compose says 0).
    refused = stack.compose(
        "run", "--entrypoint", "git", "build-image", "-C", "/src", "status", check=False
    )
    assert refused.returncode == 128, stack.outputs[-1]
    assert "fatal: detected dubious ownership in repository at '/src'" in refused.stderr

    # A failed build leaves no archive, not even an older one, which `docker
    # load` would take for this build's. (The stand-in nix fails here without
    # a repository; the exit status is not checked, as podman 4.3 loses it.)
    archive = checkout / "rates-image.tar"
    archive.write_text("an older build\n")
    (checkout / ".git").rename(checkout / ".git-away")
    failed_build = stack.compose("run", "--rm", "build-image", check=False)
    (checkout / ".git-away").rename(checkout / ".git")
    assert "fatal: not a git repository" in failed_build.stderr, stack.outputs[-1]
    assert "build-image: wrote" not in failed_build.stderr
    assert not archive.exists()

    started = time.monotonic()
    built = stack.compose("run", "--rm", "build-image")
    figures("compose run build-image (stand-in nix)", seconds=f"{time.monotonic() - started:.1f}")
    lines = (built.stdout + built.stderr).splitlines()
    assert (
        "build-image: built /nix/store/00000000000000000000000000000000-docker-image-rates.tar.gz"
        in lines
    ), stack.outputs[-1]
    assert "build-image: wrote rates-image.tar; next: docker load -i rates-image.tar" in (
        built.stdout + built.stderr
    )
    # The archive in the checkout, its user's, and nothing else left there.
    # What `nix build` made, unpacked (Podman's `load` reads no gzip).
    unpacked = gzip.decompress(store_archive.read_bytes())
    assert hashlib.sha256(archive.read_bytes()).digest() == hashlib.sha256(unpacked).digest()
    st = archive.stat()
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o777)) == (nobody, nobody, "0o644")
    assert sorted(p.name for p in checkout.glob("rates-image.tar*")) == ["rates-image.tar"]
    # This test runs as root: git, too, wants to be told the clone is safe.
    git = ["git", "-c", f"safe.directory={checkout}", "-C", str(checkout)]
    ignored = subprocess.run(
        [*git, "check-ignore", "-v", "rates-image.tar"],
        capture_output=True,
        text=True,
    )
    assert re.fullmatch(r"\.gitignore:\d+:/rates-image\.tar\trates-image\.tar\n", ignored.stdout), (
        ignored
    )

    assert f"Loaded image: {images['RATES_IMAGE']}" in load(engine, stack, archive)

    with health_checks(engine, stack):
        assert stack.up().returncode == 0, stack.outputs[-1]
        assert get(stack.url + JANUARY) == (200, JANUARY_BODY)
        assert stack.containers()["api"]["Config"]["Image"] == images["RATES_IMAGE"]

    # `down -v` deletes the stack's volumes and keeps the Nix store for the next build.
    stack.compose("down", "--volumes")
    assert stack.engine.api.volumes(stack.project) == [f"{stack.project}_nix"]
