"""docker-compose.yaml run by the real Compose tool as the README runs it, from the environment.

Two ways to run, chosen by the environment:

- RATES_IMAGE set (the GitHub workflow, after `nix build .#image` and
  `docker load`): the real images on the engine DOCKER_HOST names (Docker's
  socket by default), PostgreSQL's image from RATES_POSTGRES_IMAGE or
  docker-compose.yaml's default.
- RATES_IMAGE unset (.ci/run, as root): stand-in images made here from the
  host's Debian packages (tests/testlib/containers.py says what they share
  with the real ones), on rootful podman through its Docker-compatible API.

Either way Docker Compose v2 (or later) runs docker-compose.yaml unchanged, and the
tests read what they check through the Docker Engine API. Each test has a
project of its own (containers, network, volume) on a free port, removed
afterwards whatever happened; the stand-in images and podman's service last
for the module and go with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
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
from conftest import CONTRACT, REFERENCE_DUMP
from testlib import containers
from testlib.figures import figures
from testlib.postgres import free_port
from testlib.reports import failed
from testlib.sample import JANUARY, JANUARY_BODY
from testlib.serve import check_contract, get, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
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
        print(
            f"[figures] stand-in images built in {time.monotonic() - started:.1f} s "
            f"(rates from nix/image.nix's settings; {pg_version})"
        )
        with containers.podman_service(work, env) as (sock, log):
            no_systemd = not Path("/run/systemd/system").is_dir()
            yield Engine(compose, sock, images, env if no_systemd else None, [log])
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

    def __init__(self, engine: Engine, base: Path) -> None:
        self.engine = engine
        self.project = f"rates-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = base / "state"
        # The README's first-use helper, in Python: the password file readable
        # by the image's user, in a directory only its owner enters.
        (self.state / "secrets").mkdir(parents=True, mode=0o700)
        self.password = secrets.token_hex(24)
        secret = self.state / "secrets" / "pgpassword"
        secret.write_text(self.password + "\n")
        secret.chmod(0o644)
        # Every variable docker-compose.yaml reads is set, so that a developer's .env
        # beside it changes nothing here (the environment wins over .env).
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{engine.socket}",
            "COMPOSE_PROJECT_NAME": self.project,
            "RATES_POSTGRES_IMAGE": "",
            **engine.images,
            "RATES_HOST": "127.0.0.1",
            "RATES_PORT": str(self.port),
            "RATES_DUMP": "",
            "RATES_STATE_DIR": str(self.state),
        }
        self.outputs: list[str] = []

    def compose(
        self, *args: str, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.engine.compose, "--file", str(COMPOSE_FILE), *args],
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

    def psql(self, sql: str) -> str:
        """A query in the PostgreSQL container, over its socket (the image's local trust)."""
        return self.compose(
            "exec", "-T", "postgres", "psql", "-X", "-qAt", "-U", "rates", "-d", "rates", "-c", sql
        ).stdout.strip()


@pytest.fixture
def make_stack(engine: Engine, request: pytest.FixtureRequest) -> Iterator[Callable[[], Stack]]:
    """Stacks of the test's own; each removed with its volume and shown if the test failed."""
    stacks: list[Stack] = []
    base = Path(tempfile.mkdtemp(prefix="rates-stack-"))

    def make() -> Stack:
        stacks.append(Stack(engine, base / str(len(stacks))))
        return stacks[-1]

    try:
        yield make
    finally:
        for stack in stacks:
            if failed(request.node):
                print(f"--- {stack.project}: compose output ---")
                print("\n".join(stack.outputs))
                with_logs = stack.compose("logs", "--no-color", "--timestamps", check=False)
                print(f"--- {stack.project}: logs ---\n{with_logs.stdout}{with_logs.stderr}")
            stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
            api = engine.api
            assert api.containers(stack.project) == [], "containers left behind"
            assert api.volumes(stack.project) == [], "volumes left behind"
            assert api.networks(stack.project) == [], "networks left behind"
        if failed(request.node):
            for log in engine.logs:
                print(f"--- {log} (last 50 lines) ---")
                print("\n".join(log.read_text(errors="replace").splitlines()[-50:]))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def stack(make_stack: Callable[[], Stack], engine: Engine) -> Iterator[Stack]:
    s = make_stack()
    if engine.timer_env is None:
        yield s
    else:
        with containers.HealthTimer(engine.api, s.project, engine.timer_env):
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
    """Compose's own account of the start: the seed waited for PostgreSQL, the API for the seed."""
    events = [
        f"Container {project}-postgres-1  Healthy",
        f"Container {project}-seed-1  Starting",
        f"Container {project}-seed-1  Exited",
        f"Container {project}-api-1  Starting",
    ]
    positions = [output.find(e) for e in events]
    assert -1 not in positions and positions == sorted(positions), (events, output)


def test_stack_lifecycle(stack: Stack) -> None:
    started = time.monotonic()
    first = stack.up()
    assert first.returncode == 0, stack.outputs[-1]
    figures("compose up --wait on an empty volume", seconds=f"{time.monotonic() - started:.1f}")
    assert_started_in_order(first.stdout + first.stderr, stack.project)

    # Readiness as the health checks saw it: PostgreSQL answers over TCP, the
    # API's probe (exec form: the image has no shell) got /readyz's 200.
    c = stack.containers()
    assert set(c) == {"postgres", "seed", "api"}
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

    # The password: a file in every container, in no container's settings
    # and in no log.
    for service, inspected in c.items():
        settings = json.dumps(inspected)
        assert stack.password not in settings, f"the password is in {service}'s settings"
    secret_path = "/run/secrets/pgpassword"
    assert f"PGPASSWORD_FILE={secret_path}" in api["Config"]["Env"]
    assert stack.password not in stack.logs()
    assert stack.password not in stack.compose("config").stdout

    # A second `up` loads nothing: the seed runs again and finds the data.
    assert stack.up().returncode == 0, stack.outputs[-1]
    assert stack.logs("seed").count("rates-seed: nothing to do: the database already holds") == 1
    assert get(stack.url + JANUARY) == (200, JANUARY_BODY)

    # `down` removes the containers and keeps the data.
    stack.compose("down")
    assert stack.engine.api.containers(stack.project) == []
    assert stack.engine.api.volumes(stack.project) == [f"{stack.project}_postgres-data"]
    started = time.monotonic()
    assert stack.up().returncode == 0, stack.outputs[-1]
    figures("compose up --wait on the kept volume", seconds=f"{time.monotonic() - started:.1f}")
    seed_log = stack.logs("seed")
    assert seed_log.startswith(
        "rates-seed: nothing to do: the database already holds the sample data"
    )
    assert "loading" not in seed_log
    assert get(stack.url + JANUARY) == (200, JANUARY_BODY)

    # `down -v` removes the data too.
    stack.compose("down", "--volumes")
    assert stack.engine.api.containers(stack.project) == []
    assert stack.engine.api.volumes(stack.project) == []


def new_dump(stack: Stack) -> tuple[Path, str]:
    """A dump other than the sample: the reference dump, or another sample where it is absent."""
    if REFERENCE_DUMP.is_file():
        return REFERENCE_DUMP, "20 regions, 143 ports and 56689 prices"
    dump = stack.state / "other.sql"
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
