"""No secret in any log: a full run with a password, its failures included, then grep."""

from __future__ import annotations

import secrets
from pathlib import Path

from testlib.data import run_seed
from testlib.postgres import Cluster
from testlib.sample import JANUARY
from testlib.serve import Server, get, wait_until


def test_password_appears_in_no_log(tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    # The server logs every statement and connection, so a password sent in
    # SQL or echoed in an error would be caught here too.
    cluster = Cluster(
        tmp_path / "pg", password=password, conf="log_statement = 'all'\nlog_connections = on\n"
    )
    cluster.start()
    logs: list[str] = []
    server = None
    try:
        pwfile = tmp_path / "pgpassword"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        env = {**cluster.env(), "PGPASSWORD_FILE": str(pwfile), "RATES_ACCESS_LOG": "true"}
        del env["PGPASSWORD"]

        seed = run_seed(env)
        assert seed.returncode == 0, seed.stderr
        logs.append(seed.stdout + seed.stderr)
        again = run_seed(env)
        logs.append(again.stdout + again.stderr)

        server = Server(env, tmp_path / "serve.log")
        server.wait_ready("/readyz")
        assert get(server.url + JANUARY)[0] == 200
        assert get(server.url + "/rates?date_from=x")[0] == 400
        assert get(server.url + "/nope")[0] == 404
        cluster.restart()
        wait_until(lambda: get(server.url + "/readyz", 2)[0] == 200, "recovery")
        cluster.stop()
        assert get(server.url + "/readyz")[0] == 503
        cluster.start()

        # Failures that print connection details: a wrong password, a bad setting.
        wrong = tmp_path / "wrong"
        wrong.write_text("not-" + password + "\n")
        denied = run_seed({**env, "PGPASSWORD_FILE": str(wrong), "RATES_SEED_WAIT": "0"})
        assert denied.returncode == 1
        assert "password authentication failed" in denied.stderr
        logs.append(denied.stdout + denied.stderr)
        clash = run_seed({**env, "PGPASSWORD": password})
        assert clash.returncode == 2
        logs.append(clash.stdout + clash.stderr)
    finally:
        if server is not None:
            server.stop()
            logs.append(server.log())
        cluster.destroy()
    logs.append(cluster.log.read_text())
    assert all(logs), "every log was captured"
    assert "statement: SELECT" in logs[-1], "the server logged statements"
    leaks = [i for i, text in enumerate(logs) if password in text]
    assert leaks == [], f"the password appears in logs {leaks}"
