"""Load from wrk in a second process, on loopback: the request mix, runs, medians and spread."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import resource
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg2

from bench.common import CLK_TCK, ROOT, cpu_ticks, get, machine_busy_ticks, memory, tree

SCRIPT = ROOT / "bench" / "mix.lua"
JANUARY = "/rates?" + urlencode(
    {
        "date_from": "2016-01-01",
        "date_to": "2016-01-31",
        "orig_code": "CNGGZ",
        "dest_code": "EETLL",
    }
)
# Every load at 8 and at 16 connections, from 2 wrk threads.
CONNECTION_COUNTS = (8, 16)
WRK_THREADS = 2
# The all-new mix: paths put aside per second of a run, more than any server here
# answers, so that no run comes back to a path it sent (mix.lua counts it if one does).
NEW_PER_SECOND = 12_000
# Ranges of 1 to 31 days, as in the realistic mix, starting from 30 days before the
# data's first day to its last.
RANGE_DAYS = 31


def make_mix(env: dict[str, str], size: int, seed: int = 7) -> list[str]:
    """A realistic mix from the data: random routes and ranges, and a share of invalid requests.

    82% a priced route over 1 to 31 days within the data's days; 8% codes that match
    no price (an unknown port, a region slug): nulls; 10% invalid (400 from both the
    original and the service): a missing parameter, an impossible date, an empty code.
    """
    conn = psycopg2.connect("", **_libpq(env))
    with conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT orig_code, dest_code FROM prices ORDER BY 1, 2")
        routes = cur.fetchall()
        cur.execute("SELECT min(day), max(day) FROM prices")
        first, last = cur.fetchone()
    conn.close()
    rng = random.Random(seed)
    span = (last - first).days
    paths = []
    for _ in range(size):
        orig, dest = rng.choice(routes)
        start = first + dt.timedelta(days=rng.randint(0, span))
        end = start + dt.timedelta(days=rng.randint(0, 30))
        q = {
            "date_from": start.isoformat(),
            "date_to": end.isoformat(),
            "orig_code": orig,
            "dest_code": dest,
        }
        roll = rng.random()
        if roll < 0.04:
            q["dest_code"] = "XXZZZ"
        elif roll < 0.08:
            q["orig_code"] = "china_main"
        elif roll < 0.12:
            del q[rng.choice(list(q))]
        elif roll < 0.15:
            q["date_to"] = f"{start.year}-02-30"
        elif roll < 0.18:
            q["orig_code"] = ""
        paths.append("/rates?" + urlencode(q))
    return paths


def invalid_share(paths: list[str]) -> float:
    bad = sum(1 for p in paths if "02-30" in p or "orig_code=&" in p or p.count("=") < 4)
    return bad / len(paths)


class NewMix:
    """Requests that are all different: every (route, first day, length) once, in a shuffled order.

    Uniform over the data's routes, over first days from 30 days before the data's first
    day to its last, and over lengths of 1 to 31 days. Path i is the i-th of an affine
    permutation of that space (index * stride + offset, modulo its size, with the stride
    prime to the size), so that paths are drawn without repeats and without a list in memory.
    """

    def __init__(self, env: dict[str, str], seed: int = 11) -> None:
        conn = psycopg2.connect("", **_libpq(env))
        with conn, conn.cursor() as cur:
            cur.execute("SELECT DISTINCT orig_code, dest_code FROM prices ORDER BY 1, 2")
            self.routes: list[tuple[str, str]] = cur.fetchall()
            cur.execute("SELECT min(day), max(day) FROM prices")
            first, last = cur.fetchone()
        conn.close()
        self.first = first - dt.timedelta(days=RANGE_DAYS - 1)
        self.starts = (last - self.first).days + 1
        self.size = len(self.routes) * self.starts * RANGE_DAYS
        rng = random.Random(seed)
        self.stride = rng.randrange(self.size // 3, self.size)
        while gcd(self.stride, self.size) != 1:
            self.stride += 1
        self.offset = rng.randrange(self.size)

    def path(self, i: int) -> str:
        n = (i * self.stride + self.offset) % self.size
        n, route = divmod(n, len(self.routes))
        length, start = divmod(n, self.starts)
        orig, dest = self.routes[route]
        first = self.first + dt.timedelta(days=start)
        q = {
            "date_from": first.isoformat(),
            "date_to": (first + dt.timedelta(days=length)).isoformat(),
            "orig_code": orig,
            "dest_code": dest,
        }
        return "/rates?" + urlencode(q)

    def paths(self, start: int, count: int) -> list[str]:
        return [self.path(i) for i in range(start, start + count)]


class Walk:
    """A fixed list of paths, walked round and round by every run (the realistic mix, January)."""

    once = False

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def next_run(self, seconds: float) -> list[str]:
        return self.paths


class AllNew:
    """Paths this server has not been sent before: each run takes the next unused stretch."""

    once = True

    def __init__(self, mix: NewMix) -> None:
        self.mix = mix
        self.used = 0

    def next_run(self, seconds: float) -> list[str]:
        count = min(round(NEW_PER_SECOND * max(1, round(seconds))), self.mix.size)
        paths = self.mix.paths(self.used, count)
        self.used += count
        return paths


@dataclass
class Scenario:
    """One load on one server: where, what, whose CPU is ours, how many connections."""

    url: str
    source: Walk | AllNew
    ours: list[int]
    connections: int


def _libpq(env: dict[str, str]) -> dict[str, Any]:
    keys = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user", "PGDATABASE": "dbname"}
    keys["PGPASSFILE"] = "passfile"
    return {keys[k]: v for k, v in env.items() if k in keys}


def compare(a_url: str, b_url: str, paths: list[str]) -> dict[str, Any]:
    """The same status and equal JSON from two servers for each path (200 bodies compared)."""
    mismatches = []
    for path in paths:
        a, b = get(a_url + path), get(b_url + path)
        if a[0] != b[0] or (a[0] == 200 and a[1] != b[1]):
            mismatches.append(path)
    return {"compared": len(paths), "mismatches": len(mismatches), "examples": mismatches[:5]}


class Sampler:
    """Memory of some process trees, sampled every 0.25 s while load runs; the peak is kept."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peak: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, dict[str, float]]:
        now = {name: memory(tree(pid)) for name, pid in self.roots.items()}
        now["total"] = {
            k: round(sum(v[k] for v in now.values()), 1) for k in ("rss_mib", "pss_mib")
        }
        return now

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            now = self.sample()
            if now["total"]["pss_mib"] > self.peak.get("total", {}).get("pss_mib", -1):
                self.peak = now

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wrk(
    url: str,
    paths: list[str],
    seconds: float,
    workdir: Path,
    ours: list[int] | None = None,
    connections: int = 8,
    once: bool = False,
) -> dict[str, Any]:
    """One wrk run; its summary, plus the machine's CPU use by processes other than ours.

    `once`: each wrk thread sends its share of `paths` in order, each once (mix.lua counts
    the paths sent again if the run outlasts them); otherwise they are walked round and round.
    """
    paths_file = workdir / "paths.txt"
    if not paths_file.exists() or paths_file.read_text().splitlines() != paths:
        paths_file.write_text("\n".join(paths) + "\n")
    # wrk takes whole seconds.
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    cmd += ["--timeout", "5s"]
    cmd += ["-s", str(SCRIPT), url]
    roots = ours or []
    before_ours = cpu_ticks(p for r in roots for p in tree(r))
    before_busy, started = machine_busy_ticks(), time.monotonic()
    before_children = _children_cpu()
    proc = subprocess.Popen(
        cmd,
        env={
            **os.environ,
            "BENCH_PATHS": str(paths_file),
            "BENCH_ORDER": "once" if once else "walk",
            "BENCH_THREADS": str(WRK_THREADS),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=seconds + 60)
    elapsed = time.monotonic() - started
    busy = machine_busy_ticks() - before_busy
    ours_ticks = cpu_ticks(p for r in roots for p in tree(r)) - before_ours
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {err}")
    line = next(x for x in out.splitlines() if x.startswith("BENCH-RESULT "))
    result = json.loads(line.removeprefix("BENCH-RESULT "))
    wrk_s = _children_cpu() - before_children
    result["rps"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    result["errors"] = (
        sum(result["socket_errors"].values()) + result["status"]["5xx"] + result["status"]["other"]
    )
    capacity = elapsed * (os.cpu_count() or 1)
    # What else ran on the machine meanwhile (other users' jobs): the busy time that was
    # neither the servers under test (PostgreSQL included) nor wrk.
    result["cpu"] = {
        "machine_busy_pct": round(100 * busy / CLK_TCK / capacity, 1),
        "servers_pct": round(100 * ours_ticks / CLK_TCK / capacity, 1),
        "wrk_pct": round(100 * wrk_s / capacity, 1),
        "other_pct": round(
            100 * max(0.0, busy / CLK_TCK - ours_ticks / CLK_TCK - wrk_s) / capacity, 1
        ),
    }
    return result


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def scenario_runs(
    scenarios: dict[str, Scenario],
    runs: int,
    seconds: float,
    warmup: float,
    workdir: Path,
    sampler_roots: dict[str, dict[str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each scenario warmed up once, then `runs` rounds with the scenarios interleaved, so that
    anything else the machine does falls on all of them alike; medians and spread."""
    results: dict[str, dict[str, Any]] = {name: {"runs": []} for name in scenarios}

    def run(name: str, sc: Scenario, secs: float) -> dict[str, Any]:
        d = workdir / name.replace("/", "_")
        d.mkdir(exist_ok=True)
        paths = sc.source.next_run(secs)
        return wrk(sc.url, paths, secs, d, sc.ours, sc.connections, sc.source.once)

    for name, sc in scenarios.items():
        run(name, sc, warmup)
    for _ in range(runs):
        for name, sc in scenarios.items():
            roots = (sampler_roots or {}).get(name)
            if roots:
                with Sampler(roots) as sampler:
                    result = run(name, sc, seconds)
                result["memory_peak"] = sampler.peak
            else:
                result = run(name, sc, seconds)
            results[name]["runs"].append(result)
    for r in results.values():
        r["summary"] = summarize(r["runs"])
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }

    pct = [r["latency_us"]["percentiles"] for r in runs]
    return {
        "runs": len(runs),
        "rps": spread([r["rps"] for r in runs]),
        "p50_ms": spread([p["50"] / 1000 for p in pct]),
        "p90_ms": spread([p["90"] / 1000 for p in pct]),
        "p99_ms": spread([p["99"] / 1000 for p in pct]),
        "max_ms": spread([r["latency_us"]["max"] / 1000 for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "status_400": sum(r["status"]["400"] for r in runs),
        "repeats": sum(r["repeats"] for r in runs),
        "machine_busy_pct": spread([r["cpu"]["machine_busy_pct"] for r in runs]),
        "other_cpu_pct": spread([r["cpu"]["other_pct"] for r in runs]),
    }
