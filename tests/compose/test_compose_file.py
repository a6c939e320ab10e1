"""docker-compose.yaml as data: its documented variables, defaults and promises, without an engine.

test_compose.py runs the file; this holds it to what the README says where no
container engine is at hand, and to the names it shares with the local stack.
The last tests have Compose itself read the file (`compose config` needs no
engine) with a .env in the project directory, as a user's would be.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from testlib import containers

from rates.settings import VARIABLES

ROOT = Path(__file__).resolve().parents[2]
# ${NAME}, ${NAME:-default}, ${NAME:+replacement}: the Compose specification's interpolation.
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::([-+])([^}]*))?\}")
SECRET = "/run/secrets/pgpassword"


@pytest.fixture(scope="module")
def text() -> str:
    return (ROOT / "docker-compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(text: str) -> dict:
    return yaml.safe_load(text)


def defaults(text: str) -> dict[str, str | None]:
    """Each variable docker-compose.yaml reads, with its `:-` default (None where it has none)."""
    found: dict[str, str | None] = {}
    for name, op, value in INTERPOLATION.findall(text):
        found.setdefault(name, None)
        if op == "-":
            found[name] = value
    return found


def documented(text: str) -> dict[str, str]:
    """The header's table: '#   NAME  what it is  (default)', continued on indented lines."""
    table: dict[str, str] = {}
    name = None
    for line in text.split("\nname:", 1)[0].splitlines():
        m = re.match(r"#   ([A-Z][A-Z0-9_]+)\s+(.*)", line)
        if m:
            name = m.group(1)
            table[name] = m.group(2)
        elif name and re.match(r"#\s{20,}", line):
            table[name] += " " + line.lstrip("# ")
        else:
            name = None
    return {n: re.search(r"\(([^()]*)\)\s*$", t).group(1) for n, t in table.items()}  # type: ignore[union-attr]


def test_the_header_documents_every_variable_and_its_default(text: str) -> None:
    read = defaults(text)
    assert set(documented(text)) == set(read)
    # With no dump, /dev/null is mounted and the seed loads the sample data.
    assert {**read, "RATES_DUMP": "the sample data"} == documented(text)


def test_names_shared_with_the_local_stack_mean_the_same(text: str) -> None:
    """process-compose reads the same .env: only host-side meanings may share a name."""
    local = (ROOT / "process-compose.yaml").read_text()
    local_names = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", local)) | {v.name for v in VARIABLES}
    read = defaults(text)
    assert set(read) & local_names == {"RATES_HOST", "RATES_PORT", "RATES_DUMP", "RATES_STATE_DIR"}
    service = {v.name: v.default for v in VARIABLES}
    assert (read["RATES_HOST"], read["RATES_PORT"]) == (
        service["RATES_HOST"],
        service["RATES_PORT"],
    )
    assert "${RATES_STATE_DIR:-.state}" in local
    assert read["RATES_STATE_DIR"] == "./.state"


def test_the_default_images(text: str) -> None:
    read = defaults(text)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = (ROOT / "nix/image.nix").read_text()
    package = (ROOT / "nix/package.nix").read_text()
    # `docker load < result` names the image name:tag, tag = the package's version.
    assert 'name = "rates";' in image and "tag = rates.version;" in image
    assert f'version = "{version}";' in package
    assert read["RATES_IMAGE"] == f"rates:{version}"
    # nixpkgs 25.11's default major version (services.postgresql.package for
    # stateVersion 25.11), fully qualified so that podman needs no short-name search.
    assert read["RATES_POSTGRES_IMAGE"] == "docker.io/library/postgres:17"


def test_the_password_is_a_file_only(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        env = service["environment"]
        assert not {"PGPASSWORD", "POSTGRES_PASSWORD"} & set(env), name
        assert service["secrets"] == ["pgpassword"], name
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == SECRET
    assert services["seed"]["environment"]["PGPASSWORD_FILE"] == SECRET
    assert services["api"]["environment"]["PGPASSWORD_FILE"] == SECRET
    assert compose["secrets"] == {
        "pgpassword": {"file": "${RATES_STATE_DIR:-./.state}/secrets/pgpassword"}
    }


def test_start_order_and_health_checks_without_a_shell(compose: dict) -> None:
    s = compose["services"]
    assert s["seed"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert s["api"]["depends_on"] == {"seed": {"condition": "service_completed_successfully"}}
    assert "healthcheck" not in s["seed"]
    # Exec form: the rates image has no shell to run a CMD-SHELL string.
    assert s["api"]["healthcheck"]["test"] == ["CMD", "rates-probe"]
    assert s["postgres"]["healthcheck"]["test"][:3] == ["CMD", "pg_isready", "--host=127.0.0.1"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rates-probe"] == "rates.probe:main"


def test_only_the_api_is_published_on_loopback_by_default(compose: dict) -> None:
    s = compose["services"]
    assert s["api"]["ports"] == [
        {
            "target": 3000,
            "host_ip": "${RATES_HOST:-127.0.0.1}",
            "published": "${RATES_PORT:-3000}",
            "protocol": "tcp",
        }
    ]
    assert "ports" not in s["postgres"] and "ports" not in s["seed"]


def test_data_in_a_named_volume_and_the_dump_read_only(compose: dict) -> None:
    s = compose["services"]
    assert s["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert compose["volumes"] == {"postgres-data": None}
    assert s["seed"]["volumes"] == [
        {
            "type": "bind",
            "source": "${RATES_DUMP:-/dev/null}",
            "target": "/run/rates/dump.sql",
            "read_only": True,
        }
    ]
    assert s["seed"]["environment"]["RATES_DUMP"] == "${RATES_DUMP:+/run/rates/dump.sql}"
    assert "RATES_DUMP" not in s["api"]["environment"]


def test_the_rates_containers_are_hardened(compose: dict) -> None:
    for name in ("seed", "api"):
        service = compose["services"][name]
        assert service["image"].startswith("${RATES_IMAGE:-"), name
        assert "user" not in service, "the image's user, 65534, is the one to run as"
        # /tmp inside the container: gunicorn's heartbeat files, Python's tempfile.
        assert (service["read_only"], service["tmpfs"]) == (True, ["/tmp"])  # noqa: S108
        assert service["cap_drop"] == ["ALL"]
        assert service["security_opt"] == ["no-new-privileges:true"]


@pytest.fixture(scope="module")
def resolve():  # type: ignore[no-untyped-def]
    """Compose's own reading of docker-compose.yaml, with a .env beside it and this environment."""
    compose = containers.compose_command()
    if compose is None:
        pytest.skip(
            "Docker Compose v2 is not installed: .ci/install-docker-compose builds it from "
            "source (Go), or install Docker's compose plugin"
        )

    def run(project: Path, dotenv: str = "", **env: str) -> dict[str, Any]:
        (project / ".env").write_text(dotenv)
        argv = [
            *compose,
            "--project-directory",
            str(project),
            "--file",
            str(ROOT / "docker-compose.yaml"),
        ]
        result = subprocess.run(
            [*argv, "config", "--format", "json"],
            # Nothing from the caller's environment but what finds the tool.
            env={"PATH": os.environ["PATH"], "HOME": str(project), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(result.stdout)

    return run


def test_compose_reads_the_defaults(resolve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = resolve(tmp_path)
    s = c["services"]
    assert c["name"] == "rates"
    assert (s["api"]["image"], s["postgres"]["image"]) == (
        "rates:0.1.0",
        "docker.io/library/postgres:17",
    )
    assert [(p["host_ip"], p["published"], p["target"]) for p in s["api"]["ports"]] == [
        ("127.0.0.1", "3000", 3000)
    ]
    # No dump: an empty RATES_DUMP (the sample data) and /dev/null in place of the file.
    assert s["seed"]["environment"]["RATES_DUMP"] == ""
    assert s["seed"]["volumes"][0]["source"] == "/dev/null"
    assert c["secrets"]["pgpassword"]["file"] == f"{tmp_path}/.state/secrets/pgpassword"


def test_compose_reads_dotenv_and_the_environment_wins(resolve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dotenv = (
        "RATES_IMAGE=registry.example/rates:1.2.3\n"
        "RATES_HOST=0.0.0.0\n"
        "RATES_PORT=4000\n"
        "RATES_DUMP=/srv/dumps/rates.sql\n"
        "RATES_STATE_DIR=/srv/rates\n"
    )
    s = resolve(tmp_path, dotenv)["services"]
    assert s["seed"]["image"] == s["api"]["image"] == "registry.example/rates:1.2.3"
    assert [(p["host_ip"], p["published"]) for p in s["api"]["ports"]] == [("0.0.0.0", "4000")]
    assert s["seed"]["environment"]["RATES_DUMP"] == "/run/rates/dump.sql"
    assert s["seed"]["volumes"][0]["source"] == "/srv/dumps/rates.sql"
    c = resolve(tmp_path, dotenv, RATES_PORT="5000", RATES_STATE_DIR="/etc/rates")
    assert c["services"]["api"]["ports"][0]["published"] == "5000"
    assert c["secrets"]["pgpassword"]["file"] == "/etc/rates/secrets/pgpassword"
