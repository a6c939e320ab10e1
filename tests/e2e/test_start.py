"""Every way the README starts the local stack, and what no start may do.

The ways (testlib/stack.py WAYS): `process-compose up` in the checkout's root, the
same in a fresh shell (PATH, HOME and TERM only), after `source .envrc` (what
`nix develop` and direnv do), and `nix run .#dev` (nix/dev.sh, what the app runs).
For each: the stack runs, nothing of it listens beyond loopback, and a second start
says so in one line and changes nothing of the first, headless and in a terminal.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rates import sample
from testlib.figures import figures
from testlib.sample import JANUARY
from testlib.serve import get, wait_until
from testlib.stack import (
    CHECKOUT_FILES,
    PROCESS_COMPOSE_MISSING,
    PROCESSES,
    ROOT,
    WAYS,
    Stack,
    loopback,
)
from testlib.terminal import TMUX_MISSING, have_tmux, rows_taken

if shutil.which("process-compose") is None:
    pytest.skip(PROCESS_COMPOSE_MISSING, allow_module_level=True)

# A network namespace of its own, which an unprivileged user may make in a user namespace.
NAMESPACE = ("unshare", "--user", "--map-current-user", "--net")
# A second start in the same checkout: process-compose itself finds the control socket
# in use and exits, before it starts anything (src/api/server.go, 1.78.0 to 1.85.0).
SOCKET_IN_USE = re.compile(
    r"\d\d-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} FTL"
    r" unix socket \.process-compose\.sock is already in use"
)


@pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(),
    reason="the sockets are read from /proc/net (Linux); elsewhere: lsof -iTCP -sTCP:LISTEN",
)
@pytest.mark.parametrize("way", WAYS)
def test_the_stack_listens_on_loopback_only(make_stack: Callable[[], Stack], way: str) -> None:
    """Every socket of every process of the stack: TCP on 127.0.0.1, the control API a file."""
    stack = make_stack()
    cwd = stack.checkout
    if way == "nix":
        # From a subdirectory, with a RATES_DUMP relative to it: the app finds the
        # checkout's root, and the dump where the user is.
        cwd = stack.checkout / "sub"
        cwd.mkdir()
        dump = cwd / "dump.sql"
        if "RATES_DUMP" in stack.env:
            dump.symlink_to(stack.env["RATES_DUMP"])
        else:
            sample.main(["--prices", "1000", "--output", str(dump)])
        stack.env["RATES_DUMP"] = "dump.sql"
    started = time.monotonic()
    stack.up(way, cwd=cwd)
    figures(f"the stack started by `{way}`", ready_s=round(time.monotonic() - started, 2))
    if way == "nix":
        seed = (stack.state / "seed.log").read_text()
        assert seed.startswith(f"rates-seed: loading {cwd / 'dump.sql'} (sha256 "), seed
    assert stack.listening() == {
        ("tcp", "127.0.0.1", stack.pg_port, "postgres"),
        ("tcp", "127.0.0.1", stack.api_port, "rates-serve"),
        ("unix", "", ".process-compose.sock", "process-compose"),
    }
    assert all(loopback(address) for proto, address, _, _ in stack.listening() if proto != "unix")
    # The local stack, from process-compose.yaml; docker-compose.yaml beside it is not read.
    assert (stack.checkout / "docker-compose.yaml").is_symlink()
    assert stack.api_get("/project/state")["fileNames"] == [
        str(stack.checkout / "process-compose.yaml")
    ]
    assert set(stack.processes()) == PROCESSES
    assert get(stack.url + JANUARY)[0] == 200
    assert stack.down() == 0
    assert stack.leftovers() == []
    assert not stack.socket.exists()


@pytest.fixture(scope="module")
def first() -> Iterator[Stack]:
    """A running stack, which second starts must leave as it is."""
    stack = Stack(Path(tempfile.mkdtemp(prefix="rates-e2e-")), dump=None)
    try:
        stack.up()
        yield stack
    except BaseException:
        print(stack.diagnostics())
        raise
    finally:
        stack.kill()
        stack.remove()


def snapshot(stack: Stack) -> dict[str, object]:
    """What a second start must not change: PostgreSQL, the answers, the files."""
    files = {}
    for path in [*stack.state.iterdir(), stack.socket]:
        info = path.lstat()
        # The servers' logs grow by themselves; they must not be replaced or cut.
        files[path.name] = (
            (info.st_ino,) if path.suffix == ".err" else (info.st_ino, info.st_mtime_ns)
        )
    return {
        "postgres": stack.processes()["postgres"]["pid"],
        "postmaster.pid": (stack.state / "postgres" / "postmaster.pid").read_text(),
        "answer": get(stack.url + JANUARY),
        "files": files,
    }


@contextlib.contextmanager
def second(base: Path, **kwargs: object) -> Iterator[Stack]:
    """A second start's Stack: stopped and removed after, but never swept by its checkout,
    which may be the first's."""
    stack = Stack(base, **kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.close_terminal()
        if stack.proc is not None and stack.proc.poll() is None:
            stack.proc.terminate()
            stack.proc.wait(timeout=60)
        stack.close_log()
        stack.remove()


def second_start(again: Stack, way: str, tui: bool) -> tuple[int, list[str]]:
    """Start `again`; its exit status and what the screen (or output) said."""
    if not tui:
        again.start(way)
        code = again.wait(timeout=60)
        # Without its colours (zerolog's, also when not on a terminal).
        output = re.sub(r"\x1b\[[0-9;]*m", "", again.output_of_last_start())
        return code, [line for line in output.splitlines() if line]
    terminal = again.start_tui(way)
    quits = "rates: Ctrl-C quits (exit status 1)"
    wait_until(
        lambda: terminal.exited() or quits in terminal.text(), "the second start to stop", 60
    )
    if terminal.exited():
        # What the shell shows, without tmux's own last line.
        return terminal.exit_status(), [
            line for line in terminal.text() if not line.startswith("Pane is dead")
        ]
    pane = terminal.log("about")
    return again.quit_tui(), pane


@pytest.mark.parametrize("tui", [False, True], ids=["headless", "ui"])
@pytest.mark.parametrize("way", WAYS)
def test_a_second_start_in_the_same_checkout_changes_nothing(
    first: Stack, way: str, tui: bool
) -> None:
    if tui and not have_tmux():
        pytest.skip(TMUX_MISSING)
    before = snapshot(first)
    base = Path(tempfile.mkdtemp(prefix="rates-e2e-"))
    with second(base, checkout=first.checkout) as again:
        started = time.monotonic()
        code, said = second_start(again, way, tui)
        took = time.monotonic() - started
    assert code == 1
    assert [line for line in said if SOCKET_IN_USE.fullmatch(line)] == said[-1:], said
    assert snapshot(first) == before
    figures(f"a second start by `{way}`", ui=tui, exit_status=code, seconds=round(took, 2))


@pytest.mark.parametrize("tui", [False, True], ids=["headless", "ui"])
@pytest.mark.parametrize("way", WAYS)
def test_a_second_stack_on_the_same_state_directory_changes_nothing(
    first: Stack, way: str, tui: bool
) -> None:
    """Another checkout whose .env names the first's state directory: refused in one line."""
    if tui and not have_tmux():
        pytest.skip(TMUX_MISSING)
    before = snapshot(first)
    base = Path(tempfile.mkdtemp(prefix="rates-e2e-"))
    with second(base, state=first.state) as again:
        code, said = second_start(again, way, tui)
        reason = (
            f"rates: stopped: a stack already runs in {first.state}: PostgreSQL on"
            f" 127.0.0.1:{first.pg_port}, the API on {first.url}; quit it first"
        )
        if tui:
            quits = "rates: Ctrl-C quits (exit status 1)"
            assert rows_taken(said, [reason, quits]) == [2, 1]
        else:
            assert again.said("about") == [reason]
            assert [again.said(step) for step in PROCESSES - {"about"}] == [[]] * 4
    assert code == 1
    assert snapshot(first) == before


def test_control_api_on_tcp_beyond_loopback_is_refused(make_stack: Callable[..., Stack]) -> None:
    """process-compose on TCP (no .pc_env read): `about` stops the stack before anything starts.

    In a network namespace of its own (unprivileged: a user namespace too), whose only
    interface is a loopback that is down: the API listens on every interface there, as
    it would on a laptop, and nothing outside can reach it.
    """
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed: apt-get install util-linux")
    probe = subprocess.run([*NAMESPACE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no unprivileged network namespace here: {probe.stderr.strip()}")
    stack = make_stack(files=tuple(f for f in CHECKOUT_FILES if f != ".pc_env"))
    port = 8080  # process-compose's default: nothing else listens there in the namespace
    started = time.monotonic()
    out = subprocess.run(
        [*NAMESPACE, "--", "process-compose", "up", "--tui=false"],
        cwd=stack.checkout,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        # Without a controlling terminal, as a script or CI runs it: at one (pytest
        # typed in a terminal), `about` would wait for Ctrl-C with the reason.
        start_new_session=True,
    )
    took = time.monotonic() - started
    lines = re.sub(r"\x1b\][^\x07]*\x07", "", out.stdout).splitlines()
    assert out.returncode == 2, out.stdout + out.stderr
    assert [line for line in lines if line.startswith("[about")] == [
        f"[about\t] rates: stopped: process-compose's control API listens on TCP port {port},"
        " open to the network; start the stack in the checkout's root, whose .pc_env puts the"
        " API on a Unix socket"
    ]
    assert not stack.state.exists()  # refused before anything touched the state directory
    figures("control API on TCP refused", exposed_until_exit_s=round(took, 2))


def test_nix_run_outside_a_checkout_says_so(tmp_path: Path) -> None:
    """nix/dev.sh, what `nix run .#dev` runs, finds no stack to start outside a checkout."""
    outside = subprocess.run(
        [str(ROOT / "nix" / "dev.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert (outside.returncode, outside.stdout, outside.stderr) == (
        2,
        "",
        f"rates-dev: no checkout of rates in {tmp_path} or above it; run it in one\n",
    )
