"""python -m bench: every measurement, into results.json and the Markdown report with plots.

    python -m bench                      # the full run: docs/performance.md, docs/performance/
    python -m bench --quick --output DIR # every part at a small scale, in seconds

Needs PostgreSQL's binaries (initdb, pg_ctl, postgres, psql) and wrk on PATH; plots need the
`bench` extra (matplotlib). Everything runs on loopback, in a temporary directory that is
removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report, stack
from bench.common import INDEX, REFERENCE_DUMP, ROOT, Service, bench_cluster, machine, run_seed
from bench.load import (
    CONNECTION_COUNTS,
    JANUARY,
    NEW_PER_SECOND,
    AllNew,
    NewMix,
    Scenario,
    Walk,
    compare,
    invalid_share,
    make_mix,
    scenario_runs,
)
from rates import settings as settings_module

FULL: dict[str, Any] = {
    "seconds": 5.0,
    "runs": 3,
    "warmup": 2.0,
    "mix_size": 2000,
    "compare": 300,
    # The sweep: RATES_WORKERS at the default threads, then RATES_THREADS at the default workers.
    "workers": [1, 2, 3, 4],
    "threads": [1, 2, 4, 8],
    "seed_sizes": [1_000_000, 10_000_000],
    "stack_load_seconds": 5.0,
}
QUICK: dict[str, Any] = {
    "seconds": 1.0,
    "runs": 2,
    "warmup": 1.0,
    "mix_size": 200,
    "compare": 20,
    "workers": [1, 2],
    "threads": [2, 4],
    "seed_sizes": [2_000, 5_000],
    "stack_load_seconds": 1.0,
}


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _psql(cluster: Any, sql: str, db: str) -> str:
    return cluster.psql(sql, db)


def comparison(cluster: Any, dump: Path | None, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """The original and the service, side by side, on the same data."""
    out: dict[str, Any] = {"dump": str(dump) if dump else "the sample data (rates.sample)"}
    envs = {}
    for name in ("service", "original"):
        cluster.create_database(name)
        env = cluster.env(name) | ({"RATES_DUMP": str(dump)} if dump else {})
        took, _ = run_seed(env)
        envs[name] = cluster.env(name)
        if name == "service":
            out["seed_seconds"] = round(took, 3)
            out["prices"] = int(_psql(cluster, "SELECT count(*) FROM prices", name))
    # The original database had no index on prices: the query is a sequential scan.
    _psql(cluster, f"DROP INDEX {INDEX}", "original")
    out["plans"] = {
        name: _psql(
            cluster,
            "EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON) "
            "SELECT day, count(*), avg(price)::float8 FROM prices "
            "WHERE orig_code = 'CNGGZ' AND dest_code = 'EETLL' "
            "AND day BETWEEN '2016-01-01' AND '2016-01-31' GROUP BY day",
            name,
        ).splitlines()
        for name in ("service", "original")
    }
    mix = make_mix(envs["service"], cfg["mix_size"])
    out["mix"] = {"paths": len(mix), "invalid_share": round(invalid_share(mix), 3)}
    new = NewMix(envs["service"])
    out["new"] = {"routes": len(new.routes), "first_days": new.starts, "paths": new.size}
    out["new"]["per_run"] = NEW_PER_SECOND * max(1, round(cfg["seconds"]))
    services = {
        "original": Service("original", envs["original"], work / "original.log"),
        "service-nocache": Service("service-nocache", envs["service"], work / "nocache.log"),
        "service": Service("service", envs["service"], work / "service.log"),
    }
    pg_pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    try:
        # The all-new mix's check comes from the far end of its order, which no run reaches.
        check = [*mix[: cfg["compare"]], *new.paths(new.size - cfg["compare"], cfg["compare"])]
        check.append(JANUARY)
        out["correctness"] = {
            name: compare(services["original"].url, s.url, check)
            for name, s in services.items()
            if name != "original"
        }
        scenarios = {}
        for name, s in services.items():
            ours = [s.proc.pid, pg_pid]
            scenarios[f"{name}/january/8"] = Scenario(s.url, Walk([JANUARY]), ours, 8)
            # One stretch of the all-new order per server, shared by its runs: no run of
            # this server repeats a path an earlier one sent.
            fresh = AllNew(new)
            for c in CONNECTION_COUNTS:
                scenarios[f"{name}/mix/{c}"] = Scenario(s.url, Walk(mix), ours, c)
                scenarios[f"{name}/new/{c}"] = Scenario(s.url, fresh, ours, c)
        log(f"load: {len(scenarios)} scenarios x {cfg['runs']} runs of {cfg['seconds']} s")
        out["scenarios"] = scenario_runs(
            scenarios,
            cfg["runs"],
            cfg["seconds"],
            cfg["warmup"],
            work,
            sampler_roots={
                "service/mix/8": {"postgres": pg_pid, "api": services["service"].proc.pid}
            },
        )
    finally:
        for s in services.values():
            s.stop()
    out["sweep"] = sweep(envs["service"], new, cfg, work, pg_pid)
    return out


def sweep(
    env: dict[str, str], new: NewMix, cfg: dict[str, Any], work: Path, pg_pid: int
) -> dict[str, Any]:
    """The service as shipped on the all-new mix at 16 connections, per RATES_WORKERS and
    RATES_THREADS: the figures behind the defaults."""
    default = settings_module.load({"PGDATABASE": "-"})
    configs = [(w, default.threads) for w in cfg["workers"]]
    configs += [(default.workers, t) for t in cfg["threads"] if t != default.threads]
    out: dict[str, Any] = {"default": f"{default.workers}x{default.threads}", "runs": {}}
    for workers, threads in configs:
        log(f"load: service with {workers} workers x {threads} threads")
        extra = {"RATES_WORKERS": str(workers), "RATES_THREADS": str(threads)}
        s = Service("service", env, work / "sweep.log", **extra)
        try:
            sc = Scenario(s.url, AllNew(new), [s.proc.pid, pg_pid], max(CONNECTION_COUNTS))
            out["runs"][f"{workers}x{threads}"] = scenario_runs(
                {"new": sc}, cfg["runs"], cfg["seconds"], cfg["warmup"], work
            )["new"]["summary"]
        finally:
            s.stop()
    return out


def scale(cluster: Any, cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """rates-seed on generated datasets of growing size, and /rates on the largest."""
    out: dict[str, Any] = {"sizes": {}}
    for n in cfg["seed_sizes"]:
        dump = work / f"prices-{n}.sql"
        log(f"seed: generating {n:,} prices")
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "rates.sample", "--prices", str(n), "--output", str(dump)],
            check=True,
        )
        generated = time.monotonic() - started
        db = f"scale{n}"
        cluster.create_database(db)
        log(f"seed: loading {n:,} prices")
        took, stderr = run_seed(cluster.env(db) | {"RATES_DUMP": str(dump)})
        m = re.search(r"prices in ([0-9.]+) s", stderr)
        load = float(m.group(1)) if m else None
        size_mb = dump.stat().st_size / 1e6
        dump.unlink()
        table = _psql(cluster, "SELECT pg_total_relation_size('prices')", db)
        out["sizes"][str(n)] = {
            "prices": n,
            "dump_mb": round(size_mb, 1),
            "generate_seconds": round(generated, 2),
            "seed_seconds": round(took, 2),
            "psql_load_seconds": load,
            "rows_per_second": round(n / took),
            "table_and_indexes_mb": round(int(table) / 1e6, 1),
        }
    largest = max(cfg["seed_sizes"])
    db = f"scale{largest}"
    env = cluster.env(db)
    mix = make_mix(env, cfg["mix_size"])
    pg_pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    services = {
        "service-nocache": Service("service-nocache", env, work / "scale-nocache.log"),
        "service": Service("service", env, work / "scale-service.log"),
    }
    try:
        out["largest"] = largest
        out["scenarios"] = {
            name: r["summary"]
            for name, r in scenario_runs(
                {
                    f"{k}/mix": Scenario(s.url, Walk(mix), [s.proc.pid, pg_pid], 8)
                    for k, s in services.items()
                },
                cfg["runs"],
                cfg["seconds"],
                cfg["warmup"],
                work,
            ).items()
        }
    finally:
        for s in services.values():
            s.stop()
    for n in cfg["seed_sizes"]:
        _psql(cluster, f'DROP DATABASE "scale{n}"', "postgres")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs", help="default: docs/")
    parser.add_argument("--quick", action="store_true", help="a smoke run at a small scale")
    parser.add_argument("--dump", type=Path, help="default: ../shared/data/rates.sql if present")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite the report and plots from OUTPUT/performance/results.json",
    )
    args = parser.parse_args(argv)
    data_dir = args.output / "performance"
    if args.report_only:
        _write_report(
            json.loads((data_dir / "results.json").read_text()), args.output, args.no_plots
        )
        return
    cfg = QUICK if args.quick else FULL
    dump = args.dump or (REFERENCE_DUMP if REFERENCE_DUMP.is_file() else None)
    results: dict[str, Any] = {
        "generator": "python -m bench" + (" --quick" if args.quick else ""),
        "config": cfg,
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    work = Path(tempfile.mkdtemp(prefix="rates-bench-"))
    try:
        log(f"working in {work} (removed at the end)")
        cluster = bench_cluster(work / "pg")
        try:
            log("comparison: the original and the service, side by side")
            results["comparison"] = comparison(cluster, dump, cfg, work)
            log("seed at scale")
            results["scale"] = scale(cluster, cfg, work)
        finally:
            cluster.destroy()
        log("the local stack: cold and warm start, memory")
        (work / "stack").mkdir()
        results["stack"] = stack.measure(work / "stack", cfg["stack_load_seconds"])
        if results["stack"] is None:
            log("the local stack: not measured, process-compose is not installed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_report(results, args.output, args.no_plots)


def _write_report(results: dict[str, Any], output: Path, no_plots: bool) -> None:
    data_dir = output / "performance"
    plots = [] if no_plots else report.plots(results, data_dir)
    (output / "performance.md").write_text(report.markdown(results, plots))
    log(f"wrote {output / 'performance.md'} and {data_dir}/")


if __name__ == "__main__":
    main()
