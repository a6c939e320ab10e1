"""The local stack as a user starts it: `process-compose up` on process-compose.yaml.

Headless, or with its terminal UI in a terminal of its own (tmux); with a state
directory, ports and a control socket of its own, so that stacks run side by side.
Used by tests/e2e and by the bench (bench/stack.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
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


class Stack:
    """process-compose up, with its control API on a Unix socket."""

    def __init__(self, base: Path, dump: Path | None = None) -> None:
        # `base` should be short: PostgreSQL and process-compose put sockets there.
        self.base = base
        self.state = base / "state"
        self.socket = base / "pc.sock"
        self.pg_port = free_port()
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.log_path = base / "process-compose.out"
        # process-compose's own log, and its settings (the UI's), for this stack only.
        self.pc_log_path = base / "process-compose.log"
        (base / "config" / "process-compose").mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "RATES_STATE_DIR": str(self.state),
            "PGPORT": str(self.pg_port),
            "RATES_PORT": str(self.api_port),
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
            ["process-compose", *args, "--use-uds", "--unix-socket", str(self.socket)],
            # A log of its own: the client would overwrite the server's.
            env={**self.env, "PC_LOG_FILE": str(self.base / "process-compose-client.log")},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def command(self, tui: bool) -> list[str]:
        return [
            "process-compose",
            "up",
            "--config",
            str(ROOT / "process-compose.yaml"),
            # With the UI, as a user starts it: no flag.
            *([] if tui else ["--tui=false"]),
            # The environment set here wins over ./.env in 1.78 to 1.85, but
            # a developer's .env could still add settings (RATES_DUMP, say)
            # that this stack does not set.
            "--disable-dotenv",
            "--use-uds",
            "--unix-socket",
            str(self.socket),
        ]

    def start(self) -> None:
        """`process-compose up`, returning at once; the caller waits for what it needs."""
        self.close_log()
        self.started_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(tui=False),
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_tui(self) -> Terminal:
        """`process-compose up` with its terminal UI, in a terminal of 200 x 50."""
        assert self.terminal is None
        self.terminal = Terminal(self.base, self.env)
        self.terminal.run(self.command(tui=True), cwd=ROOT)
        return self.terminal

    def quit_tui(self) -> int:
        """Quit the UI as a user does (Ctrl-C, Enter on "Yes"); process-compose's exit status."""
        assert self.terminal is not None
        self.terminal.keys("C-c")
        self.terminal.wait_for_line("Are you sure you want to quit?", timeout=30)
        self.terminal.keys("Enter")
        status = self.terminal.exit_status()
        self.close_terminal()
        return status

    def close_terminal(self) -> None:
        if self.terminal is not None:
            self.screens.append("\n".join(self.terminal.screen()))
            self.terminal.close()
            self.terminal = None

    def up(self) -> None:
        """Start, and return once the API answers /readyz."""
        self.start()
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

    def processes(self) -> dict[str, dict[str, Any]]:
        """process-compose's view of each process: GET /processes on the control socket."""
        conn = _UnixHTTPConnection(self.socket)
        try:
            conn.request("GET", "/processes")
            return {p["name"]: p for p in json.loads(conn.getresponse().read())["data"]}
        finally:
            conn.close()

    def down(self, how: str = "down") -> int:
        """Stop the stack (`process-compose down`, or Ctrl-C as in a terminal); its exit code."""
        assert self.proc is not None
        if how == "down":
            self.pc("down")
        else:
            os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=120)
        self.close_log()
        return code

    def kill(self) -> None:
        """Whatever state it is in: SIGTERM (process-compose stops every process), then SIGKILL."""
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
        for line in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
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
            parts += [f"--- the terminal's last screen, run {n} with the UI ---", screen]
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

    def leftovers(self) -> list[str]:
        """Processes still running from this stack, found by its state directory."""
        out = subprocess.run(["pgrep", "-af", str(self.state)], capture_output=True, text=True)
        return out.stdout.splitlines()
