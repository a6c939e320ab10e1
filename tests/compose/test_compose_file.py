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

from rates.settings import VARIABLES
from testlib import containers

ROOT = Path(__file__).resolve().parents[2]
# ${NAME}, ${NAME:-default}, ${NAME:+replacement}: the Compose specification's interpolation.
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::([-+])([^}]*))?\}")
SECRET = "/run/secrets/pgpassword"  # pragma: allowlist secret (a path)
VOLUMES = ("postgres-data", "secrets", "nix")


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
    assert set(read) & local_names == {"RATES_HOST", "RATES_PORT", "RATES_DUMP"}
    service = {v.name: v.default for v in VARIABLES}
    assert (read["RATES_HOST"], read["RATES_PORT"]) == (
        service["RATES_HOST"],
        service["RATES_PORT"],
    )


def test_nothing_of_the_stack_is_kept_on_the_host(compose: dict) -> None:
    """Data and password in volumes: the local stack's state directory is not read."""
    text = json.dumps(compose)
    assert ".state" not in text and "RATES_STATE_DIR" not in text
    assert "secrets" not in {k for k in compose if k != "volumes"}
    binds = {
        name: [v for v in service.get("volumes", []) if not str(v).startswith(tuple(VOLUMES))]
        for name, service in compose["services"].items()
    }
    # The dump and the password's script, read-only; the checkout, for the
    # image's build only, which `up` does not start.
    assert binds == {
        "pgpassword": [
            {
                "type": "bind",
                "source": "./containers/pgpassword.sh",
                "target": "/run/rates/pgpassword.sh",
                "read_only": True,
                "bind": {"create_host_path": False},
            }
        ],
        "postgres": [],
        "seed": [
            {
                "type": "bind",
                "source": "${RATES_DUMP:-/dev/null}",
                "target": "/run/rates/dump.sql",
                "read_only": True,
            }
        ],
        "api": [],
        "build-image": [".:/src"],
    }


def test_the_default_images(text: str) -> None:
    read = defaults(text)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = (ROOT / "nix/image.nix").read_text()
    # `docker load < result` names the image name:tag, tag = the package's version, which
    # nix/package.nix reads from pyproject.toml.
    assert 'name = "rates";' in image and "tag = rates.version;" in image
    assert read["RATES_IMAGE"] == f"rates:{version}"
    # nixpkgs 25.11's default major version (services.postgresql.package for
    # stateVersion 25.11), fully qualified so that podman needs no short-name search.
    assert read["RATES_POSTGRES_IMAGE"] == "docker.io/library/postgres:17"
    # A release tag, not latest: the volume nix starts as a copy of its /nix.
    assert re.fullmatch(r"docker\.io/nixos/nix:2\.\d+\.\d+", read["RATES_NIX_IMAGE"] or "")


def test_the_password_is_a_file_only(compose: dict) -> None:
    services = compose["services"]
    for name, service in services.items():
        env = service.get("environment", {})
        assert not {"PGPASSWORD", "POSTGRES_PASSWORD"} & set(env), name
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == SECRET
    assert services["seed"]["environment"]["PGPASSWORD_FILE"] == SECRET
    assert services["api"]["environment"]["PGPASSWORD_FILE"] == SECRET
    # Made by the one-shot pgpassword in the volume secrets, which its readers
    # mount read-only; the build has no business with it.
    assert "secrets:/run/secrets" in services["pgpassword"]["volumes"]
    for name in ("postgres", "seed", "api"):
        assert "secrets:/run/secrets:ro" in services[name]["volumes"], name
    assert not any("secrets" in str(v) for v in services["build-image"]["volumes"])


def test_the_password_is_made_before_postgres_starts(compose: dict) -> None:
    s = compose["services"]
    init = s["pgpassword"]
    # PostgreSQL's image, for its shell; the script, not the image's entry point.
    assert init["image"] == s["postgres"]["image"]
    assert init["entrypoint"] == ["sh", "/run/rates/pgpassword.sh"]
    assert (ROOT / "containers/pgpassword.sh").is_file()
    # Root for the volume, group 65534 (the rates image's user) for the file.
    assert init["user"] == "0:65534"
    image_user = containers.image_settings()["config"]["User"]
    assert image_user.split(":")[1] == "65534"
    assert s["postgres"]["depends_on"] == {
        "pgpassword": {"condition": "service_completed_successfully"}
    }
    assert "restart" not in init and "ports" not in init


def test_start_order_and_health_checks_without_a_shell(compose: dict) -> None:
    s = compose["services"]
    assert s["postgres"]["depends_on"] == {
        "pgpassword": {"condition": "service_completed_successfully"}
    }
    assert s["seed"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert s["api"]["depends_on"] == {"seed": {"condition": "service_completed_successfully"}}
    assert "healthcheck" not in s["seed"] and "healthcheck" not in s["pgpassword"]
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
    assert [name for name, service in s.items() if "ports" in service] == ["api"]


def test_data_in_a_named_volume_and_the_dump_read_only(compose: dict) -> None:
    s = compose["services"]
    assert s["postgres"]["volumes"] == [
        "postgres-data:/var/lib/postgresql/data",
        "secrets:/run/secrets:ro",
    ]
    assert "postgres-data:/var/lib/postgresql/data:ro" in s["pgpassword"]["volumes"]
    assert compose["volumes"] == dict.fromkeys(VOLUMES)
    assert s["seed"]["volumes"] == [
        "secrets:/run/secrets:ro",
        {
            "type": "bind",
            "source": "${RATES_DUMP:-/dev/null}",
            "target": "/run/rates/dump.sql",
            "read_only": True,
        },
    ]
    assert s["seed"]["environment"]["RATES_DUMP"] == "${RATES_DUMP:+/run/rates/dump.sql}"
    assert "RATES_DUMP" not in s["api"]["environment"]


def test_the_rates_containers_are_hardened(compose: dict) -> None:
    for name in ("seed", "api", "pgpassword"):
        service = compose["services"][name]
        if name != "pgpassword":
            assert service["image"].startswith("${RATES_IMAGE:-"), name
            assert "user" not in service, "the image's user, 65534, is the one to run as"
        # /tmp inside the container: gunicorn's heartbeat files, Python's tempfile.
        assert (service["read_only"], service["tmpfs"]) == (True, ["/tmp"])  # noqa: S108
        assert service["cap_drop"] == ["ALL"]
        assert service["security_opt"] == ["no-new-privileges:true"]
    # The password's one-shot: no network, and one capability, to list
    # PostgreSQL's data directory.
    init = compose["services"]["pgpassword"]
    assert (init["network_mode"], init["cap_add"]) == ("none", ["DAC_READ_SEARCH"])


def test_the_image_build_is_outside_the_stack(compose: dict) -> None:
    """`docker compose run --rm build-image`: Nix in nixos/nix, never started by `up`."""
    build = compose["services"]["build-image"]
    assert build["profiles"] == ["build"]
    assert build["image"] == "${RATES_NIX_IMAGE:-docker.io/nixos/nix:2.32.6}"
    # The checkout's script, by the image's bash on PATH (the volume's, not a
    # store path of the image that an older volume may lack).
    assert build["working_dir"] == "/src"
    assert build["command"] == ["bash", "containers/build-image.sh"]
    assert (ROOT / "containers/build-image.sh").is_file()
    assert build["volumes"] == ["nix:/nix", ".:/src"]


def test_scripts_run_in_linux_containers_keep_lf_endings() -> None:
    """A Windows clone (core.autocrlf) must not give the containers' sh a CR at each line end."""
    scripts = ["containers/build-image.sh", "containers/pgpassword.sh"]
    out = subprocess.run(
        # The compose level runs as root, in a checkout another user may own.
        ["git", "-c", f"safe.directory={ROOT}", "check-attr", "eol", "--", *scripts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == [f"{script}: eol: lf" for script in scripts]


@pytest.fixture(scope="module")
def resolve():
    """Compose's own reading of docker-compose.yaml, with a .env beside it and this environment."""
    compose = containers.compose_command()
    if compose is None:
        pytest.skip(
            "Docker Compose v2 is not installed: .ci/install-docker-compose builds it from "
            "source (Go), or install Docker's compose plugin"
        )

    def run(project: Path, dotenv: str = "", profile: str = "", **env: str) -> dict[str, Any]:
        (project / ".env").write_text(dotenv)
        argv = [
            *compose,
            "--project-directory",
            str(project),
            "--file",
            str(ROOT / "docker-compose.yaml"),
            *(["--profile", profile] if profile else []),
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


def test_compose_reads_the_defaults(resolve, tmp_path: Path) -> None:
    c = resolve(tmp_path)
    s = c["services"]
    assert c["name"] == "rates"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (s["api"]["image"], s["postgres"]["image"]) == (
        f"rates:{version}",
        "docker.io/library/postgres:17",
    )
    assert [(p["host_ip"], p["published"], p["target"]) for p in s["api"]["ports"]] == [
        ("127.0.0.1", "3000", 3000)
    ]
    # No dump: an empty RATES_DUMP (the sample data) and /dev/null in place of the file.
    assert s["seed"]["environment"]["RATES_DUMP"] == ""
    assert dump_mount(s["seed"])["source"] == "/dev/null"
    # `up` runs the stack only; the build's profile brings in build-image, with
    # this directory as its checkout.
    assert list(s) == ["api", "pgpassword", "postgres", "seed"]
    built = resolve(tmp_path, profile="build")["services"]["build-image"]
    assert built["image"] == "docker.io/nixos/nix:2.32.6"
    assert [(v["type"], v["source"], v["target"]) for v in built["volumes"]] == [
        ("volume", "nix", "/nix"),
        ("bind", str(tmp_path), "/src"),
    ]


def dump_mount(seed: dict[str, Any]) -> dict[str, Any]:
    (mount,) = [v for v in seed["volumes"] if v["target"] == "/run/rates/dump.sql"]
    return mount


def test_compose_reads_dotenv_and_the_environment_wins(resolve, tmp_path: Path) -> None:
    dotenv = (
        "RATES_IMAGE=registry.example/rates:1.2.3\n"
        "RATES_HOST=0.0.0.0\n"
        "RATES_PORT=4000\n"
        "RATES_DUMP=/srv/dumps/rates.sql\n"
        "RATES_POSTGRES_IMAGE=registry.example/postgres:17\n"
    )
    s = resolve(tmp_path, dotenv)["services"]
    assert s["seed"]["image"] == s["api"]["image"] == "registry.example/rates:1.2.3"
    assert s["pgpassword"]["image"] == s["postgres"]["image"] == "registry.example/postgres:17"
    assert [(p["host_ip"], p["published"]) for p in s["api"]["ports"]] == [("0.0.0.0", "4000")]
    assert s["seed"]["environment"]["RATES_DUMP"] == "/run/rates/dump.sql"
    assert dump_mount(s["seed"])["source"] == "/srv/dumps/rates.sql"
    c = resolve(tmp_path, dotenv, RATES_PORT="5000", RATES_NIX_IMAGE="example/nix:2.32.6")
    assert c["services"]["api"]["ports"][0]["published"] == "5000"
    built = resolve(tmp_path, dotenv, profile="build", RATES_NIX_IMAGE="example/nix:2.32.6")
    assert built["services"]["build-image"]["image"] == "example/nix:2.32.6"
