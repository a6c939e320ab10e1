"""Run the real rates-serve on a free port and talk to it over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from rates import settings as settings_module
from rates.app import create_app
from rates.settings import Settings
from testlib.postgres import free_port


def get(url: str, timeout: float = 10) -> tuple[int, Any]:
    """GET a URL; return the status and the decoded JSON body, also for 4xx/5xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def check_contract(url: str, cases: list[dict[str, Any]]) -> int:
    """Every contract case over HTTP at `url`: its status, and equal JSON for a 200.

    Returns how many cases were checked.
    """
    for case in cases:
        query = "&".join(f"{k}={v}" for k, v in case["query"].items())
        status, body = get(f"{url}{case['path']}?{query}")
        assert status == case["status"], (case, body)
        if status == 200:
            assert json.dumps(body, sort_keys=True) == json.dumps(case["body"], sort_keys=True)
    return len(cases)


def wait_until(predicate, what: str, timeout: float = 60, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except OSError as exc:  # refused, reset: not up yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Server:
    """rates-serve as a subprocess; its log is kept for failure messages."""

    def __init__(self, env: dict[str, str], log_path: os.PathLike[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            ["rates-serve"],
            env={"PATH": os.environ["PATH"], **env, "RATES_PORT": str(self.port)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str = "/healthz") -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"rates-serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            return get(self.url + path, timeout=2)[0] == 200

        wait_until(up, f"rates-serve to answer {path}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code


class Load:
    """testlib/load.py in a second process, until stop(). The constructor returns once
    its first request is answered: on a busy machine starting it takes a while, and a
    scenario's "traffic flows" must not start before that."""

    def __init__(
        self,
        urls: list[str],
        out: os.PathLike[str],
        concurrency: int = 8,
        prefix: list[str] | None = None,
        max_seconds: float = 120,
    ) -> None:
        """`prefix`: a command that runs it elsewhere (nsenter into a test's namespace)."""
        self.out = Path(out)
        started = self.out.with_name(self.out.name + ".started")
        started.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                *(prefix or []),
                sys.executable,
                str(Path(__file__).with_name("load.py")),
                *urls,
                "--out",
                str(self.out),
                "--concurrency",
                str(concurrency),
                "--max-seconds",
                str(max_seconds),
                "--started",
                str(started),
            ]
        )
        deadline = time.monotonic() + 60
        while not started.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"the load got no answer from {urls} in 60 s")
            time.sleep(0.05)

    def stop(self) -> list[dict[str, Any]]:
        self.proc.terminate()
        assert self.proc.wait(timeout=60) == 0
        with self.out.open() as f:
            return [json.loads(line) for line in f]


def settings_of(pid: int) -> Settings:
    """The settings a running rates process has: its environment, read from its directory."""
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    with contextlib.chdir(Path(f"/proc/{pid}/cwd").resolve()):
        return settings_module.load(dict(e.decode().split("=", 1) for e in entries if b"=" in e))


def outage_figures(
    records: list[dict[str, Any]], stopping: float, down: float, up: float, api: Settings
) -> dict[str, Any]:
    """Check a load record around a database outage (times from time.time()).

    `stopping`: the stop was asked for; `down`: the stop command returned, the
    server has exited; `up`: the start was asked for; `api`: the API's settings.
    Before `stopping`: every request answered 200. During (from half a second
    after `down`, the time the API's listening connection takes to notice): every
    request answered 503, none slower than the deadline the API keeps whatever
    the database does (RATES_CONNECT_TIMEOUT + RATES_STATEMENT_TIMEOUT_MS; a
    refused connection takes milliseconds, printed). After: a 200 comes, and every
    request started after it is a 200; how long it took is printed. Returns the
    figures.
    """
    before = [r for r in records if r["start"] + r["latency"] < stopping]
    during = [r for r in records if down + 0.5 < r["start"] and r["start"] + r["latency"] < up]
    after = [r for r in records if r["start"] > up]
    assert before and during and after, (len(before), len(during), len(after))
    assert {r["status"] for r in before} == {200}
    assert {r["status"] for r in during} == {503}, Counter(r["status"] for r in during)
    slowest = max(r["latency"] for r in during)
    deadline = api.connect_timeout + api.statement_timeout_ms / 1000
    assert slowest < deadline, f"a request took {slowest:.2f} s during the outage"
    answered = [r["start"] + r["latency"] for r in after if r["status"] == 200]
    assert answered, Counter(r["status"] for r in after)
    first_ok = min(answered)
    settled = [r for r in after if r["start"] > first_ok]
    assert {r["status"] for r in settled} == {200}, Counter(r["status"] for r in settled)
    return {
        "requests": len(records),
        "answered_503_during_outage": len(during),
        "other_errors": sum(r["status"] not in (200, 503) for r in records),
        "slowest_during_outage_ms": round(slowest * 1000, 1),
        "recovery_after_restart_s": round(first_ok - up, 2),
    }


def make_client(env: dict[str, str], **extra: str):
    """A Flask test client of the app with these settings (no server)."""
    app = create_app(settings_module.load({**env, **extra}))
    return app.test_client()
