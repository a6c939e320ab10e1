"""The local stack as a user starts it: `process-compose up` on process-compose.yaml.

Headless, with a state directory, ports and a control socket of its own, so that
stacks run side by side. Used by tests/e2e and by the bench (bench/stack.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

from testlib.postgres import free_port
from testlib.serve import get, wait_until

ROOT = Path(__file__).resolve().parents[2]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.socket_path)


class Stack:
    """process-compose up, headless, with its control API on a Unix socket."""

    def __init__(self, base: Path, dump: Path | None = None) -> None:
        # `base` should be short: PostgreSQL and process-compose put sockets there.
        self.base = base
        self.state = base / "state"
        self.socket = base / "pc.sock"
        self.pg_port = free_port()
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.log_path = base / "process-compose.out"
        self.env = {
            **os.environ,
            "RATES_STATE_DIR": str(self.state),
            "PGPORT": str(self.pg_port),
            "RATES_PORT": str(self.api_port),
        }
        if dump is not None:
            self.env["RATES_DUMP"] = str(dump)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: BinaryIO | None = None
        self.started_at = 0  # the log's size when the last start began

    def pc(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A process-compose client command against this stack's control socket."""
        return subprocess.run(
            ["process-compose", *args, "--use-uds", "--unix-socket", str(self.socket)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    def start(self) -> None:
        """`process-compose up`, returning at once; the caller waits for what it needs."""
        self.close_log()
        self.started_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                "process-compose",
                "up",
                "--config",
                str(ROOT / "process-compose.yaml"),
                "--tui=false",
                # process-compose appends the variables of ./.env after the
                # environment's, so a developer's .env would override the
                # ports and state directory set here.
                "--disable-dotenv",
                "--use-uds",
                "--unix-socket",
                str(self.socket),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

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
        """Everything process-compose and the processes wrote, over every start."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def output_of_last_start(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self.started_at)
            return f.read().decode(errors="replace")

    def leftovers(self) -> list[str]:
        """Processes still running from this stack, found by its state directory."""
        out = subprocess.run(["pgrep", "-af", str(self.state)], capture_output=True, text=True)
        return out.stdout.splitlines()
