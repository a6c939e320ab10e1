"""A second shell meets the running stack: one way to set where the stack is, .env.

The stack takes its state directory and ports from .env (stack/env.sh); a second
shell reads the same file through .envrc (`source .envrc`, `. ./.envrc` in sh,
`nix develop`'s hook, direnv), so psql and rates-seed there reach the stack. An
environment that disagrees with .env is refused, in one line that names the fix.
Each shell runs with exactly the environment given, in a checkout of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from testlib.sample import JANUARY
from testlib.serve import get, wait_until
from testlib.stack import PROCESS_COMPOSE_MISSING, Stack, make_checkout
from testlib.terminal import TMUX_MISSING, have_tmux, rows_taken

LIBPQ = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSFILE")
# `source .envrc` in bash and zsh, `. ./.envrc` in sh (dash on Debian).
SHELLS = {"bash": "source ./.envrc", "zsh": "source ./.envrc", "dash": ". ./.envrc"}
needs_process_compose = pytest.mark.skipif(
    shutil.which("process-compose") is None, reason=PROCESS_COMPOSE_MISSING
)


def in_shell(
    checkout: Path, command: str, shell: str = "bash", **env: str
) -> subprocess.CompletedProcess[str]:
    """`command` in `shell` after sourcing .envrc, with PATH and `env` only."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed: apt-get install {shell}")
    argv = [shell, "-f", "-c"] if shell == "zsh" else [shell, "-c"]
    return subprocess.run(
        [*argv, f"{SHELLS[shell]} && {command}"],
        cwd=checkout,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def source_envrc(checkout: Path, shell: str = "bash", **env: str) -> dict[str, str]:
    """The libpq variables after sourcing .envrc in `checkout`, with exactly `env` besides PATH."""
    show = " && ".join(f'echo "{name}=${{{name}-(unset)}}"' for name in LIBPQ)
    out = in_shell(checkout, show, shell, **env)
    assert (out.returncode, out.stderr) == (0, "")
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def envrc_checkout(path: Path, dotenv: str = "") -> Path:
    return make_checkout(path, dotenv, files=(".envrc", "stack"))


@pytest.mark.parametrize("shell", SHELLS)
def test_defaults_are_the_stacks(tmp_path: Path, shell: str) -> None:
    checkout = envrc_checkout(tmp_path / "c")
    assert source_envrc(checkout, shell) == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "5432",
        "PGUSER": "rates",
        "PGDATABASE": "rates",
        "PGPASSFILE": f"{checkout}/.state/pgpass",
    }


@pytest.mark.parametrize("shell", SHELLS)
def test_dotenv_sets_the_port_and_state_as_process_compose_reads_it(
    tmp_path: Path, shell: str
) -> None:
    dotenv = (
        'PGPORT="6543"\nexport RATES_STATE_DIR=/srv/stack # where\nPGHOST=ignored.example\n'
        "RATES_PORT=3001 # the API's\n"
    )
    # PGHOST is the stack's own (stack/env.sh), whatever .env says.
    assert source_envrc(envrc_checkout(tmp_path / "c", dotenv), shell) == {
        "PGHOST": "127.0.0.1",
        "PGPORT": "6543",
        "PGUSER": "rates",
        "PGDATABASE": "rates",
        "PGPASSFILE": "/srv/stack/pgpass",
    }


@pytest.mark.parametrize("shell", SHELLS)
def test_sourced_from_a_subdirectory(tmp_path: Path, shell: str) -> None:
    checkout = envrc_checkout(tmp_path / "c", "PGPORT=6543\n")
    (checkout / "sub").mkdir()
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed: apt-get install {shell}")
    argv = [shell, "-f", "-c"] if shell == "zsh" else [shell, "-c"]
    source = SHELLS[shell].replace("./.envrc", "../.envrc")
    out = subprocess.run(
        [*argv, f'{source} && echo "$PGPORT $PGPASSFILE"'],
        cwd=checkout / "sub",
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, f"6543 {checkout}/.state/pgpass\n", "")


def test_outside_a_checkout_sh_says_so(tmp_path: Path) -> None:
    """sh cannot tell where the file it sources is: from elsewhere, .envrc says so.

    (bash can, and finds the checkout from the file's own path.)
    """
    if shutil.which("dash") is None:
        pytest.skip("dash is not installed: apt-get install dash")
    checkout = envrc_checkout(tmp_path / "c")
    out = subprocess.run(
        ["dash", "-c", f'. {checkout}/.envrc; echo "$? ${{PGPASSFILE-unset}}"'],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
    )
    assert (out.stdout, out.stderr) == (
        "1 unset\n",
        f".envrc: no checkout of rates in {tmp_path} or above it; source .envrc from the"
        " checkout\n",
    )


def test_exported_values_win(tmp_path: Path) -> None:
    env = {
        "PGHOST": "db.internal",
        "PGPORT": "7000",
        "PGUSER": "me",
        "PGDATABASE": "other",
        "PGPASSFILE": "/home/me/.pgpass",
    }
    assert source_envrc(envrc_checkout(tmp_path / "c", "PGPORT=6543\n"), **env) == env


def test_a_changed_dotenv_is_taken_when_sourced_again(tmp_path: Path) -> None:
    """The dev shell sourced .envrc before .env named another port: source it again."""
    checkout = envrc_checkout(tmp_path / "c")
    script = (
        "first=$PGPASSFILE && printf 'PGPORT=6001\\nRATES_STATE_DIR=/srv/a\\n' >.env"
        ' && source ./.envrc && printf "%s %s %s\\n" "$first" "$PGPORT" "$PGPASSFILE"'
        " && printf 'PGPORT=6002\\n' >.env && source ./.envrc"
        ' && printf "%s %s\\n" "$PGPORT" "$PGPASSFILE"'
    )
    out = in_shell(checkout, script)
    assert out.stdout.splitlines() == [
        f"{checkout}/.state/pgpass 6001 /srv/a/pgpass",
        f"6002 {checkout}/.state/pgpass",
    ]


def test_leaves_no_helpers_behind(tmp_path: Path) -> None:
    listed = "compgen -A variable rates_; compgen -A function rates_; compgen -A variable RATES_"
    out = in_shell(envrc_checkout(tmp_path / "c"), listed)
    assert out.stdout == ""


@needs_process_compose
def test_second_shells_reach_the_stack_dotenv_names(make_stack: Callable[..., Stack]) -> None:
    """psql and rates-seed --replace in second shells, through .envrc alone, in bash, zsh, sh."""
    stack = make_stack()
    stack.up()
    count = "psql -X -tAc 'SELECT count(*) FROM prices'"
    rows = in_shell(stack.checkout, count).stdout
    for shell in SHELLS:
        if shutil.which(shell):
            psql = in_shell(stack.checkout, count, shell)
            assert (psql.returncode, psql.stdout, psql.stderr) == (0, rows, ""), shell

    # Other data, loaded into the running stack: the API serves it without a
    # restart (rates-seed's NOTIFY drops the answer cache).
    before = get(stack.url + JANUARY)
    api_pid = stack.processes()["api"]["pid"]
    dump = stack.base / "other.sql"
    sample = [sys.executable, "-m", "rates.sample", "--prices", "20000", "--seed", "7"]
    subprocess.run([*sample, "--output", str(dump)], check=True)
    seed = in_shell(stack.checkout, "rates-seed --replace", RATES_DUMP=str(dump))
    assert seed.returncode == 0, seed.stderr
    assert "rates-seed: loaded" in seed.stderr
    psql = in_shell(stack.checkout, count)
    assert (psql.returncode, psql.stdout) == (0, "20000\n")
    wait_until(lambda: get(stack.url + JANUARY) != before, "the API to serve the new data")
    assert stack.processes()["api"]["pid"] == api_pid

    # The password came from the stack's pgpass file, and appears nowhere.
    password = (stack.state / "pgpass").read_text().strip().rsplit(":", 1)[1]
    assert password not in psql.stdout + psql.stderr + seed.stdout + seed.stderr
    assert stack.down() == 0
    assert stack.leftovers() == []


def disagrees(name: str, given: str, want: str) -> str:
    return (
        f"rates: stopped: {name} is {given} in the environment, {want} in .env (or by default);"
        " set it in .env only, and unset it"
    )


@needs_process_compose
@pytest.mark.parametrize("name", ["PGPORT", "RATES_PORT", "RATES_STATE_DIR"])
def test_an_environment_that_disagrees_with_dotenv_is_refused(
    make_stack: Callable[..., Stack], name: str
) -> None:
    """`PGPORT=... process-compose up`: a second shell would not know; the stack says so."""
    stack = make_stack()
    given = {"PGPORT": "5433", "RATES_PORT": "3001", "RATES_STATE_DIR": "elsewhere"}[name]
    want = {
        "PGPORT": str(stack.pg_port),
        "RATES_PORT": str(stack.api_port),
        "RATES_STATE_DIR": ".state",
    }[name]
    stack.env[name] = given
    stack.start()
    assert stack.wait() == 2
    assert stack.said("about") == [disagrees(name, given, want)]
    assert not stack.state.exists() and not (stack.checkout / given).exists()
    assert stack.leftovers() == []
    # Repeating .env's value, as a shell that sourced .envrc does, is fine.
    stack.env[name] = want
    stack.up()
    assert stack.down() == 0


@needs_process_compose
@pytest.mark.skipif(not have_tmux(), reason=TMUX_MISSING)
def test_an_environment_that_disagrees_is_refused_with_the_ui(stack: Stack) -> None:
    stack.env["PGPORT"] = "5433"
    terminal = stack.start_tui()
    quit_line = "rates: Ctrl-C quits (exit status 2)"
    terminal.wait_for_line(quit_line)
    reason = disagrees("PGPORT", "5433", str(stack.pg_port))
    assert rows_taken(terminal.log("about"), [reason, quit_line]) == [2, 1]
    assert stack.quit_tui() == 2
    assert not stack.state.exists()
    assert stack.leftovers() == []
