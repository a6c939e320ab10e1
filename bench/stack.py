"""The local stack's start, timed two ways.

Phase by phase: `Stack` reads the `command` of postgres-init, postgres, seed and api and
their readiness probes from process-compose.yaml and runs them with bash, in dependency
order, polling each probe every 20 ms. That times what each step costs, and runs where
process-compose is not installed.

As users start it: `under_process_compose` times `process-compose up` to the first
correct answer. process-compose polls each probe every `period_seconds` (1 s), so it adds
up to that period for each of the two probes that gate the first answer.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from bench.common import ROOT, free_port, get, tree
from bench.load import Sampler, make_mix, wrk
from rates import sample

POLL = 0.02


def oracle() -> tuple[str, list[dict[str, Any]]]:
    """A /rates path on the sample data and its answer, computed here from the dump itself."""
    out = io.StringIO()
    sample.write_dump(out)
    prices: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    inside = False
    for line in out.getvalue().splitlines():
        if line.startswith("COPY") and "prices" in line.split()[1]:
            inside = True
        elif inside and line == "\\.":
            break
        elif inside:
            orig, dest, day, price = line.split("\t")
            prices[(orig, dest)][day].append(int(price))
    route = max(prices, key=lambda r: sum(len(v) for v in prices[r].values()))
    expected = []
    for d in range(31, 0, -1):
        day = f"2016-01-{d:02d}"
        values = prices[route].get(day, [])
        count = len(values) or None
        price = sum(values) / len(values) if len(values) >= 3 else None
        expected.append({"count": count, "day": day, "price": price})
    q = {"date_from": "2016-01-01", "date_to": "2016-01-31"}
    q |= {"orig_code": route[0], "dest_code": route[1]}
    return "/rates?" + urlencode(q), expected


def _same(answer: Any, expected: list[dict[str, Any]]) -> bool:
    got = answer.get("rates") if isinstance(answer, dict) else None
    if not isinstance(got, list) or len(got) != len(expected):
        return False
    for g, e in zip(got, expected, strict=True):
        if (g["day"], g["count"]) != (e["day"], e["count"]):
            return False
        if (g["price"] is None) != (e["price"] is None):
            return False
        if e["price"] is not None and abs(g["price"] - e["price"]) > 1e-9:
            return False
    return True


class Stack:
    def __init__(self, workdir: Path) -> None:
        spec = yaml.safe_load((ROOT / "process-compose.yaml").read_text())
        self.procs = spec["processes"]
        self.workdir = workdir
        self.env = {**os.environ}
        for item in spec.get("environment", []):
            key, value = item.split("=", 1)
            self.env[key] = value
        self.env |= {
            "RATES_STATE_DIR": str(workdir / "state"),
            "PGPORT": str(free_port()),
            "RATES_PORT": str(free_port()),
        }
        self.api_url = f"http://127.0.0.1:{self.env['RATES_PORT']}"
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def _bash(self, name: str, cmd: str, wait: bool) -> Any:
        log = (self.logs / f"{name}.log").open("a")
        proc = subprocess.Popen(
            ["bash", "-c", cmd], cwd=self.workdir, env=self.env, stdout=log, stderr=log
        )
        if not wait:
            return proc
        code = proc.wait(timeout=600)
        log.close()
        if code != 0:
            raise RuntimeError(f"stack step {name} failed ({code}); see {self.logs}/{name}.log")
        return None

    def _probe(self, name: str) -> None:
        cmd = self.procs[name]["readiness_probe"]["exec"]["command"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.running[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.logs}/{name}.log")
            ok = subprocess.run(
                ["bash", "-c", cmd],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
            )
            if ok.returncode == 0:
                return
            time.sleep(POLL)
        raise RuntimeError(f"{name} never became ready; see {self.logs}/{name}.log")

    def start(self, path: str, expected: list[dict[str, Any]]) -> dict[str, float]:
        """Start in process-compose's order; seconds per phase and to the first correct answer."""
        phases: dict[str, float] = {}
        t0 = mark = time.monotonic()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            phases[name] = round(now - mark, 3)
            mark = now

        self._bash("postgres-init", self.procs["postgres-init"]["command"], wait=True)
        lap("postgres-init (initdb)")
        self.running["postgres"] = self._bash("postgres", self.procs["postgres"]["command"], False)
        self._probe("postgres")
        lap("postgres start (to its readiness probe)")
        self._bash("seed", self.procs["seed"]["command"], wait=True)
        lap("seed")
        self.running["api"] = self._bash("api", self.procs["api"]["command"], False)
        self._probe("api")
        lap("api start (to its readiness probe)")
        while True:
            status, body = get(self.api_url + path)
            if status == 200 and _same(body, expected):
                break
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f"no correct /rates answer: {status} {body}")
            time.sleep(POLL)
        lap("first /rates answer")
        phases["total"] = round(time.monotonic() - t0, 3)
        return phases

    def roots(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.running.items()}

    def stop(self) -> None:
        # As process-compose stops them: the API first (SIGTERM), then PostgreSQL (SIGINT).
        for name, sig in (("api", signal.SIGTERM), ("postgres", signal.SIGINT)):
            proc = self.running.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def measure(workdir: Path, load_seconds: float) -> dict[str, Any]:
    """A cold start, a warm start, and the stack's memory idle and under the mix."""
    path, expected = oracle()
    stack = Stack(workdir)
    result: dict[str, Any] = {"probe_poll_s": POLL, "path": path}
    try:
        result["cold"] = stack.start(path, expected)
        stack.stop()
        result["warm"] = stack.start(path, expected)
        time.sleep(1)
        roots = stack.roots()
        idle = Sampler(roots).sample()
        env = {
            "PGHOST": "127.0.0.1",
            "PGPORT": stack.env["PGPORT"],
            "PGUSER": "rates",
            "PGDATABASE": "rates",
            "PGPASSFILE": str(workdir / "state" / "pgpass"),
        }
        paths = make_mix(env, 2000)
        with Sampler(roots) as sampler:
            run = wrk(stack.api_url, paths, load_seconds, workdir, list(roots.values()))
        result["memory"] = {"idle": idle, "load": sampler.peak, "load_rps": run["rps"]}
        result["memory"]["processes"] = {name: len(tree(pid)) for name, pid in roots.items()}
    finally:
        stack.stop()
    result["process_compose"] = under_process_compose(workdir / "pc", path, expected)
    return result


def under_process_compose(workdir: Path, path: str, expected: list[dict[str, Any]]) -> Any:
    """`process-compose up`, cold then warm, to the first correct answer; None without it."""
    exe = shutil.which("process-compose")
    if exe is None:
        return None
    version = subprocess.run(
        [exe, "version", "--short"], capture_output=True, text=True, check=True
    ).stdout.strip()
    workdir.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    env = {
        **os.environ,
        "RATES_STATE_DIR": str(workdir / "state"),
        "PGPORT": str(free_port()),
        "RATES_PORT": str(api_port),
    }
    control = ["--use-uds", "--unix-socket", str(workdir / "pc.sock")]
    up = [exe, "up", "--config", str(ROOT / "process-compose.yaml"), "--tui=false"]
    up += ["--disable-dotenv", *control]
    result: dict[str, Any] = {"version": version}
    for run in ("cold", "warm"):
        with (workdir / "process-compose.log").open("ab") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                up,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"process-compose exited; see {workdir}")
                    try:
                        status, body = get(f"http://127.0.0.1:{api_port}{path}")
                    except OSError:
                        status, body = 0, None
                    if status == 200 and _same(body, expected):
                        break
                    if time.monotonic() - t0 > 120:
                        raise RuntimeError(f"no correct /rates answer: {status} {body}")
                    time.sleep(POLL)
                result[run] = round(time.monotonic() - t0, 3)
            finally:
                if proc.poll() is None:
                    subprocess.run([exe, "down", *control], env=env, capture_output=True)
                    try:
                        proc.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
    return result
