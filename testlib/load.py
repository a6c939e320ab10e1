"""A load generator in a second process, recording every request it makes.

    python load.py URL [URL ...] --out FILE [--concurrency 8] [--max-seconds 120]
                   [--started FILE]

Each of `concurrency` threads sends GET requests in a loop, cycling through
the URLs, each on a new connection (so that a server reload never meets a
half-closed keep-alive connection, and every failure is the server's), until
SIGTERM or SIGINT, or `max-seconds` as a safety bound. On the way out it
writes one JSON line per request: start (time.time(), to line up with the
test's own events), latency (seconds), status (an HTTP status, or the
error's name), type (the Content-Type) and, for anything but a 200, body (the
first 300 characters of the answer, or the error's message). With --started, it
creates that file once its first request is answered, so that a caller can wait
until the load really flows.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import threading
import time
import urllib.parse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--started")
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    started = time.monotonic()
    records: list[tuple[float, float, int | str, str | None, str | None]] = []
    lock = threading.Lock()
    targets = [urllib.parse.urlsplit(u) for u in args.urls]

    def worker(offset: int) -> None:
        i = offset
        mine = []
        while not stop.is_set() and time.monotonic() - started < args.max_seconds:
            url = targets[i % len(targets)]
            i += 1
            wall, t0 = time.time(), time.monotonic()
            kind = body = None
            try:
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)
                try:
                    conn.request("GET", f"{url.path}?{url.query}")
                    response = conn.getresponse()
                    data = response.read()
                    status: int | str = response.status
                    kind = response.getheader("Content-Type")
                    if status != 200:
                        body = data[:300].decode("utf-8", "replace")
                finally:
                    conn.close()
            # A cut answer (IncompleteRead) or a malformed one is an HTTPException,
            # not an OSError: a failure to record, not the end of this thread.
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                body = str(exc)[:300]
            mine.append((wall, time.monotonic() - t0, status, kind, body))
            if args.started and len(mine) == 1:
                open(args.started, "a").close()
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.1)
    with open(args.out, "w") as f:
        for start, latency, status, kind, body in sorted(records, key=lambda r: r[0]):
            record = {"start": start, "latency": latency, "status": status, "type": kind}
            if body is not None:
                record["body"] = body
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
