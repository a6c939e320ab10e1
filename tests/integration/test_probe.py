"""rates-probe against a real rates-serve: exit 0 only when /readyz says ready, else why.

Each case runs the installed console script, the one the image's health check
runs, with only RATES_HOST and RATES_PORT in its environment.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testlib.data import seeded
from testlib.postgres import Cluster, free_port


def probe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rates-probe", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_ready(start_server, sample_env: dict[str, str]) -> None:
    server = start_server(sample_env)
    result = probe(RATES_PORT=str(server.port))
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"rates-probe: http://127.0.0.1:{server.port}/readyz: 200 ready\n",
        "",
    )


def test_a_wildcard_listen_address_is_probed_on_loopback(start_server, sample_env) -> None:
    """The image sets RATES_HOST=0.0.0.0 for rates-serve; the probe reads the same variable."""
    server = start_server(sample_env)
    result = probe(RATES_HOST="0.0.0.0", RATES_PORT=str(server.port))
    assert (result.returncode, result.stdout) == (
        0,
        f"rates-probe: http://127.0.0.1:{server.port}/readyz: 200 ready\n",
    )


def test_not_ready_before_the_seed(start_server, db_env: dict[str, str]) -> None:
    server = start_server(db_env, ready="/healthz")
    result = probe(RATES_PORT=str(server.port))
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"rates-probe: http://127.0.0.1:{server.port}/readyz: 503 unavailable: not seeded yet\n",
    )


def test_not_ready_while_the_database_is_down(start_server, own_pg: Cluster) -> None:
    own_pg.create_database("rates")
    server = start_server(seeded(own_pg.env("rates")))
    assert probe(RATES_PORT=str(server.port)).returncode == 0
    own_pg.stop()
    result = probe(RATES_PORT=str(server.port))
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"rates-probe: http://127.0.0.1:{server.port}/readyz: 503 unavailable: "
        "database unavailable\n",
    )
    own_pg.start()


def test_nothing_listening() -> None:
    port = free_port()  # bound and released: nothing listens there now
    result = probe(RATES_PORT=str(port))
    assert (result.returncode, result.stderr) == (
        1,
        f"rates-probe: http://127.0.0.1:{port}/readyz: connection refused: "
        f"is rates-serve running, and listening on port {port}?\n",
    )


def test_wrong_port_postgresql(pg: Cluster) -> None:
    """RATES_PORT=5432 by mistake: PostgreSQL reads the request as a startup packet and hangs up."""
    result = probe(RATES_PORT=str(pg.port))
    assert (result.returncode, result.stderr) == (
        1,
        f"rates-probe: http://127.0.0.1:{pg.port}/readyz: the connection closed without an "
        f"HTTP answer: is port {pg.port} the API's?\n",
    )


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_web_server() -> Iterator[int]:
    """Another HTTP server on loopback, as when RATES_PORT names some other application."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_wrong_port_another_web_server(other_web_server: int) -> None:
    port = other_web_server
    result = probe(RATES_PORT=str(port))
    assert (result.returncode, result.stderr) == (
        1,
        f"rates-probe: http://127.0.0.1:{port}/readyz: 404 Not Found, not the rates API's answer\n",
    )


def test_a_server_that_never_answers() -> None:
    """Connected (the kernel completes the handshake) but no reply: the probe gives up in 3 s."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = probe(RATES_PORT=str(port))
    assert (result.returncode, result.stderr) == (
        1,
        f"rates-probe: http://127.0.0.1:{port}/readyz: no answer within 3 s\n",
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"RATES_PORT": "http"}, "RATES_PORT: expected an integer from 1 to 65535, got 'http'"),
        (
            (),
            {"RATES_HOST": " "},
            "RATES_HOST: expected an address to listen on, such as 127.0.0.1 or 0.0.0.0, got ' '",
        ),
        (
            ("--port", "3000"),
            {},
            "takes no arguments; it probes the API at RATES_HOST and RATES_PORT",
        ),
    ],
)
def test_bad_configuration(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = probe(*args, **env)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"rates-probe: {message}\n")


def test_the_probe_reads_no_database_settings(tmp_path: Path) -> None:
    """It needs neither PGDATABASE nor the password: an operator can run it anywhere."""
    port = free_port()
    secret = tmp_path / "unreadable"
    secret.write_text("x\n")
    secret.chmod(0)
    result = probe(RATES_PORT=str(port), PGPASSWORD_FILE=str(secret))
    assert (result.returncode, result.stderr) == (
        1,
        f"rates-probe: http://127.0.0.1:{port}/readyz: connection refused: "
        f"is rates-serve running, and listening on port {port}?\n",
    )
