"""The local stack as a user starts it: `process-compose up` in a checkout's root.

Each stack gets a checkout of its own: a short directory holding the repository's
process-compose.yaml, .pc_env, stack/ and .envrc (symlinks) and a .env of its own with
free ports, as a developer's clone holds them. It is started by one of the ways the
README gives, headless or with its terminal UI in a terminal of its own (tmux), so that
stacks run side by side and none touches the developer's own. Used by tests/e2e and by
the bench (bench/stack.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

from testlib import ROOT
from testlib.postgres import free_port
from testlib.serve import get, wait_until
from testlib.terminal import Terminal

PROCESS_COMPOSE_MISSING = (
    "process-compose is not installed: use `nix develop`, or .ci/install-process-compose"
)
PROCESSES = {"about", "postgres-init", "postgres", "seed", "api"}
# What a checkout holds of the local stack (besides .env, which each test writes).
CHECKOUT_FILES = (
    "process-compose.yaml",
    ".pc_env",
    "stack",
    ".envrc",
    "docker-compose.yaml",
)
# The ways the README starts the stack, each from the checkout's root:
#   up     `process-compose up`, in the test's own environment
#   fresh  `process-compose up` in a fresh shell: PATH, HOME and TERM only
#   envrc  `process-compose up` after `source .envrc` (nix develop sources it too)
#   nix    `nix run .#dev`: the script it runs, nix/dev.sh, with the tools on PATH
WAYS = ("up", "fresh", "envrc", "nix")


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.socket_path)


def make_checkout(path: Path, dotenv: str, files: tuple[str, ...] = CHECKOUT_FILES) -> Path:
    """A checkout of the local stack at `path`, with this .env."""
    path.mkdir(parents=True)
    for name in files:
        if (ROOT / name).exists():
            (path / name).symlink_to(ROOT / name)
    (path / ".env").write_text(dotenv)
    return path


def _inodes(pid: int) -> set[int]:
    """The inodes of process `pid`'s sockets."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return inodes


def _address(hex_address: str) -> str:
    """An address of /proc/net/tcp or tcp6 (the host's bytes in 32-bit words) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def _name(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return str(pid)


def listening(pids: set[int]) -> set[tuple[str, str, int | str, str]]:
    """Every socket on which these processes accept connections or datagrams.

    (protocol, address, port or path, program): TCP in LISTEN, bound UDP, and listening
    Unix sockets, from /proc/net (Linux).
    """
    owner = {inode: _name(pid) for pid in pids for inode in _inodes(pid)}
    found: set[tuple[str, str, int | str, str]] = set()
    for proto, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        with open(f"/proc/net/{proto}") as table:
            next(table)
            for row in table:
                fields = row.split()
                inode = int(fields[9])
                if fields[3] == state and inode in owner:
                    address, port = fields[1].split(":")
                    found.add((proto, _address(address), int(port, 16), owner[inode]))
    with open("/proc/net/unix") as table:
        next(table)
        for row in table:
            fields = row.split()
            # Flags 00010000: accepts connections (__SO_ACCEPTCON).
            if len(fields) == 8 and int(fields[6]) in owner and fields[3] == "00010000":
                found.add(("unix", "", fields[7], owner[int(fields[6])]))
    return found


def _working_directories() -> list[tuple[int, str]]:
    """(pid, working directory) of the processes this user may see."""
    if Path("/proc/self/cwd").exists():
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    found.append((int(entry.name), os.readlink(entry / "cwd")))
        return found
    lsof = shutil.which("lsof") or "/usr/sbin/lsof"
    out = subprocess.run([lsof, "-a", "-d", "cwd", "-F", "pn"], capture_output=True, text=True)
    found, pid = [], 0
    for line in out.stdout.splitlines():
        if line.startswith("p"):
            pid = int(line[1:])
        elif line.startswith("n"):
            found.append((pid, line[1:]))
    return found


def loopback(address: str) -> bool:
    return address == "::1" or address.startswith(("127.", "::ffff:127."))


class Stack:
    """`process-compose up` in a checkout of its own; its control API on the checkout's socket."""

    def __init__(
        self,
        base: Path,
        dump: Path | None = None,
        state: Path | None = None,
        checkout: Path | None = None,
        files: tuple[str, ...] = CHECKOUT_FILES,
    ) -> None:
        """A stack with free ports, in a new checkout `base`/c.

        `state`: a RATES_STATE_DIR for its .env; `checkout`: start in that checkout
        instead (a second start there), with its .env; `files`: what the new checkout
        holds.
        """
        # `base` should be short: process-compose and tmux put sockets there.
        self.base = base
        if checkout is None:
            self.pg_port, self.api_port = free_port(), free_port()
            dotenv = f"PGPORT={self.pg_port}\nRATES_PORT={self.api_port}\n"
            if state is not None:
                dotenv += f"RATES_STATE_DIR={state}\n"
            checkout = make_checkout(base / "c", dotenv, files)
        else:
            settings = dict(line.split("=", 1) for line in (checkout / ".env").read_text().split())
            self.pg_port, self.api_port = int(settings["PGPORT"]), int(settings["RATES_PORT"])
            state = Path(settings.get("RATES_STATE_DIR", checkout / ".state"))
        self.checkout = checkout
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.state = state or checkout / ".state"
        self.socket = checkout / ".process-compose.sock"
        self.log_path = base / "process-compose.out"
        # process-compose's own log, and its settings (the UI's), for this stack only.
        self.pc_log_path = base / "process-compose.log"
        (base / "config" / "process-compose").mkdir(parents=True, exist_ok=True)
        (base / "home").mkdir()
        self.env = {
            **os.environ,
            "PC_LOG_FILE": str(self.pc_log_path),
            "XDG_CONFIG_HOME": str(base / "config"),
        }
        if dump is not None:
            self.env["RATES_DUMP"] = str(dump)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: BinaryIO | None = None
        self.started_at = 0  # the log's size when the last start began
        self.terminal: Terminal | None = None  # while it runs with its UI
        self.screens: list[str] = []  # the last screen of each run with the UI

    def pc(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A process-compose client command against this stack's control socket."""
        return subprocess.run(
            ["process-compose", *args, "--unix-socket", str(self.socket)],
            # A log of its own: the client would overwrite the server's.
            env={**self.env, "PC_LOG_FILE": str(self.base / "process-compose-client.log")},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def command(self, tui: bool, way: str = "up") -> tuple[list[str], dict[str, str]]:
        """How `way` starts the stack: the command line in the checkout, and its environment."""
        # With the UI, as a user starts it: no flag.
        flags = [] if tui else ["--tui=false"]
        if way in ("up", "fresh"):
            argv = ["process-compose", "up", *flags]
        elif way == "envrc":
            argv = ["bash", "-c", 'source ./.envrc && exec process-compose up "$@"', "-", *flags]
        elif way == "nix":
            argv = [str(ROOT / "nix" / "dev.sh"), *flags]
        else:
            raise ValueError(way)
        if way == "fresh":
            home = str(self.base / "home")
            return argv, {"PATH": os.environ["PATH"], "HOME": home, "TERM": "xterm-256color"}
        return argv, self.env

    def start(self, way: str = "up", cwd: Path | None = None) -> None:
        """Start the stack headless, with no terminal, returning at once."""
        self.close_log()
        self.started_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = self.log_path.open("ab")
        argv, env = self.command(tui=False, way=way)
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd or self.checkout,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # A session of its own: no controlling terminal, as under a script or CI.
            start_new_session=True,
        )

    def start_tui(self, way: str = "up", tui: bool = True) -> Terminal:
        """Start the stack in a terminal of 100 x 40, with its UI (or headless, tui=False)."""
        assert self.terminal is None
        argv, env = self.command(tui=tui, way=way)
        self.terminal = Terminal(self.base, env, width=100, height=40)
        self.terminal.run(argv, cwd=self.checkout)
        return self.terminal

    def quit_tui(self) -> int:
        """Quit the UI as a user does (Ctrl-C, Enter on "Yes"); process-compose's exit status."""
        assert self.terminal is not None
        self.terminal.keys("C-c")
        self.terminal.wait_for_text("Are you sure you want to quit?", timeout=30)
        self.terminal.keys("Enter")
        status = self.terminal.exit_status()
        self.close_terminal()
        return status

    def close_terminal(self) -> None:
        if self.terminal is not None:
            self.screens.append("\n".join(self.terminal.screen()))
            self.terminal.close()
            self.terminal = None

    def up(self, way: str = "up", cwd: Path | None = None) -> None:
        """Start headless, and return once the API answers /readyz."""
        self.start(way, cwd)
        wait_until(
            lambda: self.alive() and get(self.url + "/readyz", 2)[0] == 200,
            "the API to be ready",
            timeout=180,
            interval=0.2,
        )

    def alive(self) -> bool:
        """True while process-compose runs; raises once it has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"process-compose exited with {self.proc.returncode}")
        return True

    def wait(self, timeout: float = 120) -> int:
        """Wait for a headless start to end; process-compose's exit status."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        self.close_log()
        return code

    def processes(self) -> dict[str, dict[str, Any]]:
        """process-compose's view of each process: GET /processes on the control socket."""
        return {p["name"]: p for p in self.api_get("/processes")["data"]}

    def api_get(self, path: str) -> Any:
        conn = _UnixHTTPConnection(self.socket)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def down(self, how: str = "down") -> int:
        """Stop the stack (`process-compose down`, or Ctrl-C as in a terminal); its exit code."""
        assert self.proc is not None
        if how == "down":
            self.pc("down")
        else:
            os.killpg(self.proc.pid, signal.SIGINT)
        return self.wait()

    def kill(self) -> None:
        """Whatever state it is in: stop it (process-compose stops every process), then SIGKILL."""
        if self.terminal is not None:
            # process-compose in the terminal: `down` stops it as its UI would.
            if not self.terminal.exited():
                with contextlib.suppress(subprocess.SubprocessError):
                    self.pc("down")
                with contextlib.suppress(AssertionError):
                    self.terminal.exit_status(timeout=90)
            self.close_terminal()
        if self.proc is not None and self.proc.poll() is None:
            # Each process runs in a process group of its own, out of reach of a
            # signal to process-compose's group: SIGTERM makes it stop them all.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.close_log()

    def close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def output(self) -> str:
        """Everything process-compose and the processes wrote, over every headless start."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def diagnostics(self) -> str:
        """What to show when a test fails: output, screens, process-compose's own log."""
        parts = [f"--- process-compose output ({self.log_path}) ---", self.output()]
        for n, screen in enumerate(self.screens, 1):
            parts += [f"--- the terminal's last screen, run {n} in a terminal ---", screen]
        if self.pc_log_path.exists():
            parts += [
                f"--- process-compose's log ({self.pc_log_path}) ---",
                self.pc_log_path.read_text(errors="replace"),
            ]
        return "\n".join(parts)

    def output_of_last_start(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self.started_at)
            return f.read().decode(errors="replace")

    def said(self, process: str) -> list[str]:
        """The lines `process` wrote in the last headless start.

        process-compose prints each as "[NAME\\t] LINE" (src/app/process.go, handleInfo
        and handleError, 1.78.0 to 1.85.0).
        """
        prefix = f"[{process}\t] "
        # Headless, it also sets the terminal's title, an escape sequence at the start.
        output = re.sub(r"\x1b\][^\x07]*\x07", "", self.output_of_last_start())
        return [
            line.removeprefix(prefix) for line in output.splitlines() if line.startswith(prefix)
        ]

    def exited(self) -> list[str]:
        """The processes that exited in the last start, in order, from process-compose's
        own log, which each start begins afresh ("Exited exit_code=N process=NAME").
        """
        log = re.sub(r"\x1b\[[0-9;]*m", "", self.pc_log_path.read_text())
        return re.findall(r"Exited exit_code=-?\d+ process=(\S+)", log)

    def pids(self) -> set[int]:
        """This stack's processes, process-compose's included: those working in its checkout.

        Every step runs in the checkout's root, and PostgreSQL in its data directory there.
        Working directories from /proc (Linux), or else lsof (macOS).
        """
        checkout = str(self.checkout.resolve())
        return {
            pid
            for pid, cwd in _working_directories()
            if cwd == checkout or cwd.startswith(checkout + "/")
        }

    def leftovers(self) -> list[str]:
        """What still runs of this stack: its processes' command lines.

        A probe that process-compose started just before it exited ends by itself,
        within its timeout (5 s, process-compose.yaml): it is given that long.
        """

        def running() -> list[str]:
            lines = []
            for pid in sorted(self.pids()):
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    lines.append(f"{pid} {cmdline.decode(errors='replace').strip()}")
            return lines

        with contextlib.suppress(AssertionError):
            wait_until(lambda: not running(), "the stack's last processes to end", timeout=10)
        return running()

    def listening(self) -> set[tuple[str, str, int | str, str]]:
        """Every socket this stack's processes listen on (see `listening`)."""
        return listening(self.pids())

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
