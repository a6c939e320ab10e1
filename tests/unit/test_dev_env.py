""".envrc: the dev shell's libpq variables agree with the stack process-compose.yaml starts.

Sourced by nix develop's shellHook, by direnv and by hand; each case runs it in
bash with exactly the environment given, from a checkout of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIBPQ = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSFILE")


def source_envrc(
    checkout: Path, env: dict[str, str], dotenv: str | None = None, names: tuple[str, ...] = LIBPQ
) -> dict[str, str]:
    """These variables after `source .envrc` in `checkout`, with exactly `env` besides PATH.

    PATH is the caller's: bash, sed and tail are where the tests run (the Nix
    build sandbox has no /usr/bin).
    """
    shutil.copy(ROOT / ".envrc", checkout / ".envrc")
    if dotenv is not None:
        (checkout / ".env").write_text(dotenv)
    out = subprocess.run(
        [
            "bash",
            "-c",
            'source ./.envrc && for v in "$@"; do printf "%s=%s\\n" "$v" "${!v-(unset)}"; done',
            "bash",
            *names,
        ],
        cwd=checkout,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stderr == ""
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


@pytest.fixture(scope="module")
def stack_defaults() -> dict[str, str]:
    """What process-compose.yaml gives the seed and the API when nothing is configured."""
    stack = yaml.safe_load((ROOT / "process-compose.yaml").read_text())
    env = dict(item.split("=", 1) for item in stack["environment"])
    seed = stack["processes"]["seed"]["command"]
    state = re.search(r'^state="\$\{RATES_STATE_DIR:-([^}]+)\}"$', seed, re.M).group(1)
    pgport = re.search(r"\$\{PGPORT:-([0-9]+)\}", seed).group(1)
    assert re.search(r'export PGPASSFILE="\$state/pgpass"', seed)
    return {**env, "PGPORT": pgport, "state": state}


def test_defaults_are_the_stacks(tmp_path: Path, stack_defaults: dict[str, str]) -> None:
    got = source_envrc(tmp_path, {})
    assert got == {
        "PGHOST": stack_defaults["PGHOST"],
        # Not exported: an exported PGPORT would win over .env for
        # process-compose. libpq's default is the stack's.
        "PGPORT": "(unset)",
        "PGUSER": stack_defaults["PGUSER"],
        "PGDATABASE": stack_defaults["PGDATABASE"],
        "PGPASSFILE": f"{tmp_path}/{stack_defaults['state']}/pgpass",
    }
    assert got["PGHOST"] == "127.0.0.1" and stack_defaults["PGPORT"] == "5432"


def test_a_changed_dotenv_is_taken_when_sourced_again(tmp_path: Path) -> None:
    """The dev shell sourced .envrc before .env named another port: source it again."""
    shutil.copy(ROOT / ".envrc", tmp_path / ".envrc")
    script = (
        "source ./.envrc && first=$PGPASSFILE"
        " && printf 'PGPORT=6001\\nRATES_STATE_DIR=/srv/a\\n' >.env && source ./.envrc"
        ' && printf \'%s %s %s\\n\' "$first" "$PGPORT" "$PGPASSFILE"'
        " && printf 'PGPORT=6002\\n' >.env && source ./.envrc"
        ' && printf \'%s %s\\n\' "$PGPORT" "$PGPASSFILE"'
    )
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.splitlines() == [
        f"{tmp_path}/.state/pgpass 6001 /srv/a/pgpass",
        f"6002 {tmp_path}/.state/pgpass",
    ]


def test_dotenv_sets_the_port_and_state_as_for_process_compose(tmp_path: Path) -> None:
    dotenv = 'PGPORT="6543"\nexport RATES_STATE_DIR=/srv/stack\nPGHOST=ignored.example\n'
    got = source_envrc(tmp_path, {}, dotenv)
    # PGHOST is fixed by process-compose.yaml's own environment, whatever .env says.
    assert got == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "6543",
        "PGUSER": "rates",
        "PGDATABASE": "rates",
        "PGPASSFILE": "/srv/stack/pgpass",
    }


def test_exported_values_win(tmp_path: Path) -> None:
    env = {
        "PGHOST": "db.internal",
        "PGPORT": "7000",
        "PGUSER": "me",
        "PGDATABASE": "other",
        "PGPASSFILE": "/home/me/.pgpass",
    }
    assert source_envrc(tmp_path, env, "PGPORT=6543\n") == env


def test_exported_state_dir_wins_and_is_relative_to_the_checkout(tmp_path: Path) -> None:
    got = source_envrc(tmp_path, {"RATES_STATE_DIR": "second"}, "RATES_STATE_DIR=/srv/stack\n")
    assert got["PGPASSFILE"] == f"{tmp_path}/second/pgpass"


def test_process_compose_finds_the_local_stack_not_compose_yaml(tmp_path: Path) -> None:
    # process-compose looks for compose.yaml first, the containers' stack.
    name = ("PC_CONFIG_FILES",)
    got = source_envrc(tmp_path, {}, names=name)
    assert got == {"PC_CONFIG_FILES": f"{tmp_path}/process-compose.yaml"}
    mine = source_envrc(tmp_path, {"PC_CONFIG_FILES": "/elsewhere.yaml"}, names=name)
    assert mine == {"PC_CONFIG_FILES": "/elsewhere.yaml"}


def test_leaves_no_helpers_behind(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".envrc", tmp_path / ".envrc")
    out = subprocess.run(
        ["bash", "-c", "source ./.envrc && compgen -A variable _rates; compgen -A function _rates"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert out.stdout == ""
