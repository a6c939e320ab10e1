"""Shared pieces: the throwaway PostgreSQL, the servers under test, process memory and CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The tests' helpers (throwaway PostgreSQL, HTTP polling, the stack), reused rather than copied.
from testlib import ROOT
from testlib.data import REFERENCE_DUMP
from testlib.postgres import Cluster, free_port
from testlib.serve import get, wait_until
from testlib.stack import Stack

__all__ = ["REFERENCE_DUMP", "ROOT", "Cluster", "Stack", "free_port", "get", "wait_until"]

INDEX = "prices_orig_code_dest_code_day_idx"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def bench_cluster(base: Path) -> Cluster:
    """The tests' throwaway server, but durable as a real one (the tests turn fsync off)."""
    cluster = Cluster(base)
    with (cluster.data / "postgresql.conf").open("a") as conf:
        # Later lines win: undo the tests' shortcuts so that seed figures are real ones.
        conf.write("fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n")
    cluster.start()
    return cluster


def run_seed(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run the real rates-seed; return its wall time and its log."""
    started = time.monotonic()
    result = subprocess.run(
        ["rates-seed", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"rates-seed failed ({result.returncode}): {result.stderr}")
    return took, result.stderr


class Service:
    """A server under test on a free port: the service (with or without cache), or the original."""

    def __init__(self, kind: str, env: dict[str, str], log: Path, **extra: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"PATH": os.environ["PATH"], **env, **extra, "RATES_PORT": str(self.port)}
        if kind == "original":
            # gunicorn's defaults: one sync worker.
            cmd = ["gunicorn", "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{self.port}"]
            cmd += ["bench.original:app"]
        elif kind == "service":
            cmd = ["rates-serve"]
        elif kind == "service-nocache":
            cmd = [sys.executable, "-m", "bench.nocache"]
        else:
            raise ValueError(kind)
        env["PYTHONPATH"] = str(ROOT)
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {self.proc.returncode}; see {log}")
            return get(self.url + "/", timeout=2)[0] == 200

        wait_until(up, f"{kind} to answer", timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def tree(pid: int) -> list[int]:
    """A process and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat(int(entry))[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def memory(pids: Iterable[int]) -> dict[str, float]:
    """Resident size of processes, in MiB: RSS summed (counts shared pages once per process)
    and PSS (shared pages split between the processes that map them: sums to the real total)."""
    rss = pss = 0
    count = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
            count += 1
        except (OSError, ValueError):
            continue
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1), "processes": count}


def cpu_ticks(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            f = _stat(pid)
            total += int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            continue
    return total


def machine_busy_ticks() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "unknown",
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    pg = subprocess.run(["postgres", "--version"], capture_output=True, text=True).stdout.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "postgres": pg,
        "wrk": wrk[0] if wrk else "",
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }
