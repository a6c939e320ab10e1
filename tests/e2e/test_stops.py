"""What stops the local stack, and what its user sees: the reason, on the screen.

process-compose's terminal UI shows one process's log, and closes with everything
in it once no process runs. The stack keeps it open on the reason instead: every
step reports what stops the stack to `about`, first in the list and so the one
the UI shows, which waits at a terminal until the user quits (stack/about). Each
case runs as a user meets it: with the UI, in a terminal of 100 columns (tmux)
whose screen is read, and headless with no terminal, as scripts and CI start it,
where process-compose exits at once. Same recipe as test_stack.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from rates import sample
from testlib.figures import figures
from testlib.sample import JANUARY, JANUARY_BODY
from testlib.serve import get, wait_until
from testlib.stack import PROCESS_COMPOSE_MISSING, Stack, port_closed
from testlib.terminal import TMUX_MISSING, Terminal, have_tmux, rows_taken

if shutil.which("process-compose") is None:
    pytest.skip(PROCESS_COMPOSE_MISSING, allow_module_level=True)

needs_tmux = pytest.mark.skipif(not have_tmux(), reason=TMUX_MISSING)

STEPS = ("postgres-init", "postgres", "seed", "api")
QUIT = "rates: Ctrl-C quits (exit status 1)"


@contextlib.contextmanager
def taken(port: int) -> Iterator[None]:
    """The port taken by a listener of the test's own on 127.0.0.1, as another server would."""
    with socket.socket() as s:
        # As servers do, so that connections in TIME_WAIT on it do not matter.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        yield


@contextlib.contextmanager
def bound(port: int) -> Iterator[None]:
    """The port bound but not listened on: nothing accepts connections, yet a server's bind fails.

    No SO_REUSEADDR: with it on both sides, Linux would let the server bind too.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        yield


def port_of(stack: Stack, variable: str) -> int:
    return stack.pg_port if variable == "PGPORT" else stack.api_port


def in_use(port: int, variable: str) -> str:
    return f"port {port} on 127.0.0.1 is in use; set {variable} to a free port in .env"


def starting(stack: Stack) -> str:
    return (
        f"rates: starting: PostgreSQL on 127.0.0.1:{stack.pg_port} (PGPORT), the API on"
        f" http://127.0.0.1:{stack.api_port} (RATES_PORT), data in .state"
    )


def shows(terminal: Terminal, *lines: str) -> None:
    """`about`'s log pane begins with these lines, each in at most two rows (100 columns)."""
    assert max(rows_taken(terminal.log("about"), list(lines))) <= 2, "\n".join(terminal.screen())


@pytest.mark.parametrize("variable", ["PGPORT", "RATES_PORT"])
def test_a_port_taken_stops_the_stack_headless(stack: Stack, variable: str) -> None:
    port = port_of(stack, variable)
    with taken(port):
        started = time.monotonic()
        stack.start()
        code = stack.wait()
        took = time.monotonic() - started
    assert code == 1
    assert stack.said("about") == [f"rates: stopped: {in_use(port, variable)}"]
    # Nothing was started, so nothing restarted for ever.
    assert [stack.said(step) for step in STEPS] == [[], [], [], []]
    assert stack.leftovers() == []
    assert port_closed(stack.pg_port) and port_closed(stack.api_port)
    figures(f"{variable} taken, headless", exit_status=code, seconds=round(took, 2))


@needs_tmux
@pytest.mark.parametrize("variable", ["PGPORT", "RATES_PORT"])
def test_a_port_taken_stops_the_stack_with_the_ui(stack: Stack, variable: str) -> None:
    port = port_of(stack, variable)
    reason = f"rates: stopped: {in_use(port, variable)}"
    with taken(port):
        started = time.monotonic()
        terminal = stack.start_tui()
        terminal.wait_for_line(QUIT)
        took = time.monotonic() - started
        # The UI stays open, on `about`'s log, which says why.
        shows(terminal, reason, QUIT)
        assert [terminal.row(step)[4] for step in STEPS] == ["Pending"] * 4
        assert stack.quit_tui() == 1
    assert stack.leftovers() == []
    assert port_closed(stack.pg_port) and port_closed(stack.api_port)
    figures(f"{variable} taken, with the UI", reason_on_screen_after_s=round(took, 2))


@needs_tmux
def test_headless_at_a_terminal_it_waits_with_the_reason(stack: Stack) -> None:
    """--tui=false typed at a terminal: the reason, then Ctrl-C quits with its status."""
    with taken(stack.pg_port):
        terminal = stack.start_tui(tui=False)
        # Headless, process-compose prints each line after the process's name.
        terminal.wait_for_line(f"[about\t] {QUIT}".expandtabs())
        text = terminal.text()
        assert text[-2:] == [
            f"[about\t] rates: stopped: {in_use(stack.pg_port, 'PGPORT')}".expandtabs(),
            f"[about\t] {QUIT}".expandtabs(),
        ]
        terminal.keys("C-c")
        assert terminal.exit_status() == 1
    stack.close_terminal()
    assert stack.leftovers() == []


@pytest.mark.parametrize(("name", "variable"), [("postgres", "PGPORT"), ("api", "RATES_PORT")])
def test_a_server_restarted_into_a_taken_port_stops_the_stack(
    stack: Stack, name: str, variable: str
) -> None:
    """Not restarted for ever: a server whose port was taken while it was stopped."""
    stack.up()
    port = port_of(stack, variable)
    stack.pc("process", "stop", name)
    wait_until(lambda: port_closed(port), f"{name} to release port {port}", timeout=60)
    with taken(port):
        stack.pc("process", "start", name)
        code = stack.wait()
    assert code == 1
    assert stack.said("about")[-1] == f"rates: stopped: {in_use(port, variable)}"
    assert stack.said(name)[-1] == f"{name}: {in_use(port, variable)}"
    assert stack.leftovers() == []


@pytest.mark.parametrize(("name", "variable"), [("postgres", "PGPORT"), ("api", "RATES_PORT")])
def test_a_server_that_cannot_bind_stops_the_stack(stack: Stack, name: str, variable: str) -> None:
    """The server's own bind failure: one failed start, then no restart."""
    port = port_of(stack, variable)
    with bound(port):
        started = time.monotonic()
        stack.start()
        code = stack.wait()
        took = time.monotonic() - started
    assert code == 1
    assert stack.said("about")[-1] == f"rates: stopped: {in_use(port, variable)}"
    assert stack.said(name)[-1] == f"{name}: {in_use(port, variable)}"
    assert stack.pc_log_path.read_text().count(f"Restarting {name} in ") == 1
    assert stack.leftovers() == []
    figures(f"{variable} bound, no listener", exit_status=code, seconds=round(took, 2))


def test_a_bad_dump_stops_the_stack_headless(stack: Stack) -> None:
    bad = stack.base / "empty.sql"
    bad.write_text("")
    stack.env["RATES_DUMP"] = str(bad)
    stack.start()
    assert stack.wait() == 1
    reason = (
        f"rates-seed: {bad} is empty; expected a plain-SQL pg_dump of regions, ports, prices;"
        " the database is unchanged"
    )
    assert stack.said("about")[-1] == f"rates: stopped: {reason}"
    assert stack.said("seed") == [reason]
    assert stack.leftovers() == []


def test_a_port_that_is_no_port_is_bad_configuration(stack: Stack) -> None:
    """Refused before anything starts, with status 2."""
    (stack.checkout / ".env").write_text(f"PGPORT=54321x\nRATES_PORT={stack.api_port}\n")
    stack.start()
    assert stack.wait() == 2
    assert stack.said("about") == [
        "rates: stopped: PGPORT is '54321x' in .env; expected a port number from 1 to 65535"
    ]
    assert not stack.state.exists()
    assert stack.leftovers() == []


def test_a_setting_the_seed_rejects_stops_the_stack_with_status_2(stack: Stack) -> None:
    """Bad configuration: process-compose exits 2, the seed's own status."""
    stack.env["RATES_SEED_WAIT"] = "soon"
    stack.start()
    assert stack.wait() == 2
    reason = "rates-seed: RATES_SEED_WAIT: expected seconds, an integer from 0 to 3600, got 'soon'"
    assert stack.said("about")[-1] == f"rates: stopped: {reason}"
    assert stack.said("seed") == [reason]
    assert stack.leftovers() == []


@needs_tmux
def test_a_bad_dump_stops_the_stack_with_the_ui(stack: Stack) -> None:
    """The seed's longest line for a bad dump, in at most two rows at 100 columns."""
    bad = stack.base / "bad.sql"
    bad.write_text("this is not a dump\n")
    stack.env["RATES_DUMP"] = str(bad)
    terminal = stack.start_tui()
    terminal.wait_for_line(QUIT)
    reason = (
        f"rates-seed: {bad} has no data for regions, ports, prices; expected a plain-SQL"
        " pg_dump of regions, ports, prices; the database is unchanged"
    )
    shows(terminal, starting(stack), f"rates: stopped: {reason}", QUIT)
    # The stack is stopped while the UI stays open: PostgreSQL too.
    assert port_closed(stack.pg_port)
    wait_until(
        lambda: (
            [terminal.row(step)[4] for step in STEPS]
            == ["Completed", "Completed", "Failed", "Skipped"]
        ),
        "the process table to show the stack stopped",
        timeout=30,
    )
    assert terminal.row("seed")[-1] == "1"  # the exit code column
    assert stack.quit_tui() == 1
    assert stack.leftovers() == []


def _own_dump(stack: Stack) -> tuple[str, str]:
    """A user's dump, not the sample: its path and its sha256's first 12 digits."""
    mine = stack.base / "mine.sql"
    sample.main(["--prices", "2000", "--seed", "7", "--output", str(mine)])
    return str(mine), hashlib.sha256(mine.read_bytes()).hexdigest()[:12]


def kept(dump: str, sha: str) -> str:
    return (
        f"rates-seed: nothing to do: keeping {dump} (sha256 {sha}): RATES_DUMP is not set;"
        " to load other data: RATES_DUMP=FILE rates-seed --replace"
    )


def test_started_again_without_rates_dump_it_keeps_the_dump_headless(stack: Stack) -> None:
    dump, sha = _own_dump(stack)
    stack.env["RATES_DUMP"] = dump
    stack.up()
    answer = get(stack.url + JANUARY)
    assert answer[0] == 200 and answer[1] != JANUARY_BODY  # the dump's answer, not the sample's
    assert stack.down() == 0
    del stack.env["RATES_DUMP"]
    stack.up()
    assert stack.said("seed") == [kept(dump, sha)]
    assert get(stack.url + JANUARY) == answer
    assert stack.down() == 0
    assert stack.leftovers() == []


@needs_tmux
def test_started_again_without_rates_dump_it_keeps_the_dump_with_the_ui(stack: Stack) -> None:
    dump, sha = _own_dump(stack)
    stack.env["RATES_DUMP"] = dump
    stack.start_tui()
    wait_until(lambda: get(stack.url + "/readyz", 2)[0] == 200, "the API", timeout=180)
    answer = get(stack.url + JANUARY)
    assert answer[0] == 200 and answer[1] != JANUARY_BODY
    assert stack.quit_tui() == 0

    del stack.env["RATES_DUMP"]
    terminal = stack.start_tui()
    wait_until(lambda: get(stack.url + "/readyz", 2)[0] == 200, "the API", timeout=180)
    assert get(stack.url + JANUARY) == answer
    # The seed's log, as a user opens it: its row is the last; the first is selected.
    terminal.keys("Down", "Down", "Down", "Down")
    wait_until(
        lambda: "seed" in terminal.text() and terminal.log("seed")[0].startswith("rates-seed:"),
        "the seed's log on the screen",
        timeout=30,
    )
    assert rows_taken(terminal.log("seed"), [kept(dump, sha)])[0] <= 2
    assert stack.quit_tui() == 0
    assert stack.leftovers() == []


@needs_tmux
def test_another_dump_is_refused_in_one_line_that_fits(stack: Stack) -> None:
    """A different RATES_DUMP over loaded data: the seed refuses, in two rows at 100 columns."""
    dump, _ = _own_dump(stack)
    stack.env.pop("RATES_DUMP", None)
    stack.up()  # the sample data
    assert stack.down() == 0
    stack.env["RATES_DUMP"] = dump
    terminal = stack.start_tui()
    quit_refused = "rates: Ctrl-C quits (exit status 3)"
    terminal.wait_for_line(quit_refused)
    refusal = (
        "rates-seed: refused: the database holds the sample data (57000 prices) (sha256"
        f" {sample_sha()}); to load {dump} instead: rates-seed --replace"
    )
    assert stack.state.joinpath("seed.log").read_text().splitlines() == [refusal]
    shows(terminal, starting(stack), f"rates: stopped: {refusal}", quit_refused)
    assert stack.quit_tui() == 3
    assert stack.leftovers() == []


def sample_sha() -> str:
    """The sample dump's sha256, first 12 digits, as rates-seed records it."""
    out = io.StringIO()
    sample.write_dump(out)
    return hashlib.sha256(out.getvalue().encode()).hexdigest()[:12]
