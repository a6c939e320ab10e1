"""PGPASSWORD_FILE as the containers use it: read by the service, passed on in no argv.

docker-compose.yaml hands the password to rates-seed and rates-serve as a file (a
Compose secret) that must be readable by the image's user; these tests run
the same commands as plain processes with the file laid out the same way,
and look at what every process they start exposes in /proc. The logs are
covered by test_secrets_in_logs.py.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from testlib.data import run_seed
from testlib.postgres import Cluster, locked
from testlib.serve import Server, wait_until


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def exposed(pid: int) -> tuple[bytes, bytes]:
    """A process's command line and environment, as /proc shows them."""
    proc = Path(f"/proc/{pid}")
    return (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()


def test_the_password_reaches_no_argv_and_no_service_environment(tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    cluster = Cluster(tmp_path / "pg", password=password)
    cluster.start()
    server = None
    try:
        # docker-compose.yaml's layout: a file every user may read (the image's user
        # is not its owner) in a directory only its owner may enter.
        directory = tmp_path / "secrets"
        directory.mkdir(mode=0o700)
        pwfile = directory / "pgpassword"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o644)
        cluster.create_database("rates")
        env = {**cluster.env("rates"), "PGPASSWORD_FILE": str(pwfile)}
        del env["PGPASSWORD"]
        first = run_seed(env)
        assert first.returncode == 0, first.stderr

        # A second load, held up by a lock on prices, so that rates-seed and
        # its psql are both caught running.
        other = tmp_path / "other.sql"
        subprocess.run(
            [sys.executable, "-m", "rates.sample", "--prices", "500", "--seed", "7", "-o", other],
            check=True,
        )
        with locked(cluster, "rates", "prices"):
            seed = subprocess.Popen(
                ["rates-seed", "--replace"],
                env={"PATH": os.environ["PATH"], **env, "RATES_DUMP": str(other)},
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_until(
                lambda: (
                    cluster.psql(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = 'rates-seed' AND wait_event_type = 'Lock'"
                    )
                    == "1"
                ),
                "rates-seed's psql to wait for the lock on prices",
            )
            (psql,) = children(seed.pid)
            seen = {"rates-seed": exposed(seed.pid), "psql": exposed(psql)}
            psql_environ = os.stat(f"/proc/{psql}/environ")
        _, errors = seed.communicate(timeout=120)
        assert seed.returncode == 0, errors

        server = Server(env, tmp_path / "serve.log")
        server.wait_ready("/readyz")

        # /readyz can be answered by the first worker before gunicorn has
        # forked the second.
        def both_workers() -> list[int] | None:
            found = children(server.proc.pid)
            return found if len(found) >= 2 else None

        workers = wait_until(both_workers, "both gunicorn workers", timeout=30)
        assert len(workers) == 2  # RATES_WORKERS' default
        seen["rates-serve"] = exposed(server.proc.pid)
        for n, worker in enumerate(workers):
            seen[f"rates-serve worker {n}"] = exposed(worker)
    finally:
        if server is not None:
            server.stop()
        cluster.destroy()

    secret = password.encode()
    assert [name for name, (argv, _) in seen.items() if secret in argv] == []
    services = [name for name in seen if name != "psql"]
    assert [name for name in services if secret in seen[name][1]] == []
    # The file's path is what they were given, and all they pass on themselves.
    assert all(f"PGPASSWORD_FILE={pwfile}".encode() in seen[name][1] for name in services)
    # psql takes the password the way every libpq tool does, in PGPASSWORD:
    # its environment is readable by its own user and root only, who can
    # read the secret file anyway.
    assert b"\0PGPASSWORD=" + secret + b"\0" in b"\0" + seen["psql"][1]
    assert (stat.S_IMODE(psql_environ.st_mode), psql_environ.st_uid) == (0o400, os.getuid())


def test_an_unreadable_password_file_stops_start_up_in_one_line(tmp_path: Path) -> None:
    """The image's user cannot read the secret: both commands say so and exit 2."""
    assert os.geteuid() != 0, "the integration level runs as an unprivileged user"
    pwfile = tmp_path / "pgpassword"
    pwfile.write_text("s3cret\n")  # pragma: allowlist secret (test data)
    pwfile.chmod(0)
    env = {"PATH": os.environ["PATH"], "PGDATABASE": "rates", "PGPASSWORD_FILE": str(pwfile)}
    expected = (
        "PGPASSWORD_FILE: expected a readable file whose first line is the password, "
        f"got '{pwfile}'"
    )
    for command in ("rates-serve", "rates-seed"):
        result = subprocess.run([command], env=env, capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stderr) == (2, f"{command}: {expected}\n"), command
