"""GET each URL once, each on a new connection, and print the answers as one JSON list.

    python http_fetch.py URL [URL ...]

Each answer: url, status (an HTTP status, or the error's name), headers (names in
lower case) and body (text). tests/cluster runs it on the client host, so that its
requests start inside the test's closed network.
"""

from __future__ import annotations

import http.client
import json
import sys
import urllib.parse
from typing import Any


def fetch(url: str) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        return {
            "url": url,
            "status": response.status,
            "headers": {k.lower(): v for k, v in response.getheaders()},
            "body": response.read().decode("utf-8", "replace"),
        }
    except OSError as exc:
        return {"url": url, "status": type(exc).__name__, "headers": {}, "body": str(exc)}
    finally:
        conn.close()


if __name__ == "__main__":
    json.dump([fetch(url) for url in sys.argv[1:]], sys.stdout)
