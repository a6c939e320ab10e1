"""The local stack's start, timed under process-compose itself, and its memory.

`process-compose up` is started as a user starts it (headless, its control API on a Unix
socket), with a state directory and ports of its own: testlib/stack.py, which the
e2e tests use too. Its control API is polled every 20 ms for the moment each process
completes or becomes ready, and the API for the first correct /rates answer, so the phases
include process-compose's probe period (1 s, its smallest). Without process-compose
installed, the stack is not measured.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.common import Stack, get, tree
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
        average = sum(values) / len(values) if len(values) >= 3 else None
        expected.append({"count": count, "day": day, "price": average})
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


# Each phase ends when process-compose reports this of that process; the last, when the
# API (started once the seed completed) gives its first correct answer. The API's own
# readiness probe gates nothing after it, so it is not waited for.
MILESTONES = [
    ("postgres-init (initdb)", "postgres-init", "completed"),
    ("postgres ready (probe every 1 s)", "postgres", "ready"),
    ("seed", "seed", "completed"),
]


def _reached(state: dict[str, Any], event: str) -> bool:
    if event == "completed":
        return state.get("status") == "Completed" and state.get("exit_code") == 0
    return state.get("is_ready") == "Ready"


def timed_start(stack: Stack, path: str, expected: list[dict[str, Any]]) -> dict[str, float]:
    """Start the stack; seconds per phase, and from `up` to the first correct answer."""
    t0 = time.monotonic()
    stack.start()
    reached: dict[str, float] = {}
    while True:
        stack.alive()
        if time.monotonic() - t0 > 120:
            raise RuntimeError(f"no correct /rates answer after 120 s; see {stack.log_path}")
        now = time.monotonic() - t0
        try:
            procs = stack.processes()
        except (OSError, ValueError):  # the control socket is not up yet
            procs = {}
        for phase, name, event in MILESTONES:
            if _reached(procs.get(name, {}), event):
                reached.setdefault(phase, now)
        if "seed" in reached:
            try:
                status, body = get(stack.url + path)
            except OSError:
                status, body = 0, None
            if status == 200 and _same(body, expected):
                reached["api start to the first correct /rates"] = time.monotonic() - t0
                break
        time.sleep(POLL)
    phases, mark = {}, 0.0
    for phase, at in sorted(reached.items(), key=lambda item: item[1]):
        phases[phase] = round(at - mark, 3)
        mark = at
    phases["total"] = round(mark, 3)
    return phases


def measure(workdir: Path, load_seconds: float) -> dict[str, Any] | None:
    """A cold start, a warm start, and the stack's memory idle and under the mix.

    None where process-compose is not installed.
    """
    exe = shutil.which("process-compose")
    if exe is None:
        return None
    version = subprocess.run(
        [exe, "version", "--short"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path, expected = oracle()
    stack = Stack(workdir)
    result: dict[str, Any] = {"process_compose": version, "poll_s": POLL, "path": path}
    try:
        result["cold"] = timed_start(stack, path, expected)
        stack.down()
        result["warm"] = timed_start(stack, path, expected)
        time.sleep(1)  # let the first answer's work settle before the idle sample
        procs = stack.processes()
        roots = {name: procs[name]["pid"] for name in ("postgres", "api")}
        idle = Sampler(roots).sample()
        env = {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(stack.pg_port),
            "PGUSER": "rates",
            "PGDATABASE": "rates",
            "PGPASSFILE": str(stack.state / "pgpass"),
        }
        paths = make_mix(env, 2000)
        with Sampler(roots) as sampler:
            run = wrk(stack.url, paths, load_seconds, workdir, list(roots.values()))
        result["memory"] = {"idle": idle, "load": sampler.peak, "load_rps": run["rps"]}
        result["memory"]["processes"] = {name: len(tree(pid)) for name, pid in roots.items()}
    finally:
        stack.kill()
    return result
