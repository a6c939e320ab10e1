"""A throwaway PostgreSQL cluster from the initdb/pg_ctl/postgres on PATH.

The tests stop, restart and kill the server, so they drive pg_ctl directly
rather than through a fixture library; it is the same set of binaries the
Nix dev shell and Debian's postgresql package put on PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not on PATH: run the tests inside `nix develop`, or put "
            "PostgreSQL's bin directory on PATH (Debian: /usr/lib/postgresql/<version>/bin)"
        )


class Cluster:
    """One PostgreSQL server on 127.0.0.1 and a short socket directory, superuser `postgres`."""

    def __init__(self, base: Path, password: str | None = None, conf: str = "") -> None:
        require_binaries("initdb", "pg_ctl", "postgres", "psql")
        base.mkdir(parents=True, exist_ok=True)
        self.data = base / "data"
        # Socket paths break past ~100 bytes; pytest's tmp paths can be long.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.port = free_port()
        self.password = password
        self.log = base / "postgres.log"
        cmd = [
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        if password is None:
            cmd += ["--auth=trust"]
        else:
            pwfile = base / "pwfile"
            pwfile.write_text(password + "\n")
            cmd += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            subprocess.run(cmd, check=True, capture_output=True)
        finally:
            if password is not None:
                pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 50\n" + conf
            )

    def env(self, database: str = "postgres") -> dict[str, str]:
        """libpq variables that reach this server over TCP."""
        env = {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGDATABASE": database,
        }
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            ["pg_ctl", "-D", str(self.data), "-l", str(self.log), *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._pg_ctl("start", "-w", "-t", "60")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-w", "-m", mode)

    def restart(self) -> None:
        self._pg_ctl("restart", "-w", "-m", "fast", "-t", "60")

    def running(self) -> bool:
        return (
            subprocess.run(
                ["pg_ctl", "-D", str(self.data), "status"], capture_output=True
            ).returncode
            == 0
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL over the socket as the superuser; return unaligned, tuples-only output."""
        out = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": self.password or ""},
        )
        return out.stdout.strip()

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@contextlib.contextmanager
def locked(cluster: Cluster, database: str, table: str) -> Iterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on `table` from another session until the block ends."""
    holder = subprocess.Popen(
        [
            "psql",
            "-X",
            "-q",
            "-h",
            str(cluster.socket_dir),
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            "-d",
            database,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PGPASSWORD": cluster.password or ""},
    )
    assert holder.stdin is not None
    try:
        holder.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n")
        holder.stdin.flush()
        deadline = time.monotonic() + 30
        while (
            cluster.psql(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                f"WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted",
                database,
            )
            != "1"
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not lock {table}")
            time.sleep(0.02)
        yield
    finally:
        holder.stdin.write("ROLLBACK;\n")
        holder.stdin.close()
        holder.wait(timeout=30)
