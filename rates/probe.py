"""rates-probe: exit 0 when the API on this host is ready (/readyz answers 200).

A health check for places with no shell and no curl: the OCI image (Compose's
`healthcheck: ["CMD", "rates-probe"]`), a systemd unit, a load balancer's
agent. It reads the API's own RATES_HOST and RATES_PORT, so with the
service's environment it finds the service; a wildcard listen address
(0.0.0.0, ::), which is what the image sets, means this host's loopback.

Prints one line: what answered, or why nothing useful did. Exit status:
0 ready, 1 not ready (or not the API), 2 bad configuration.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from rates.settings import VARIABLES, SettingsError

PATH = "/readyz"
# Shorter than the health checks that run the probe (5 s in docker-compose.yaml), so
# that the probe, not the engine, says what took too long.
TIMEOUT = 3.0
# Listen addresses that mean "every interface": the probe reaches those on
# the loopback address of the same family.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}  # noqa: S104 (read, not bound)


def target(environ: Mapping[str, str]) -> tuple[str, int]:
    """The address to probe, from RATES_HOST and RATES_PORT as rates-serve reads them."""
    values: dict[str, Any] = {}
    for var in VARIABLES:
        if var.name in ("RATES_HOST", "RATES_PORT"):
            raw = environ.get(var.name) or var.default
            assert raw is not None  # both have defaults
            try:
                values[var.name] = var.parse(raw)
            except ValueError:
                raise SettingsError(f"{var.name}: expected {var.expects}, got {raw!r}") from None
    host = values["RATES_HOST"].strip()
    return _WILDCARDS.get(host, host.strip("[]")), values["RATES_PORT"]


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}{PATH}" if ":" in host else f"http://{host}:{port}{PATH}"


def probe(host: str, port: int, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """GET /readyz once; (ready, what happened) with the reason in one line."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", PATH, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read(64 * 1024)
    except ConnectionRefusedError:
        return False, f"connection refused: is rates-serve running, and listening on port {port}?"
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except ConnectionError:  # reset, aborted, broken pipe (refused is above)
        # Something listens there but does not speak HTTP: PostgreSQL, for
        # one, reads a few bytes and hangs up.
        return False, f"the connection closed without an HTTP answer: is port {port} the API's?"
    except http.client.HTTPException:
        return False, f"not an HTTP answer: is port {port} the API's?"
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    finally:
        conn.close()
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if response.status == 200 and document == {"status": "ready"}:
        return True, "200 ready"
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        reason = f"{document.get('error', response.reason)}: {document['message']}"
    else:
        reason = f"{response.reason}, not the rates API's answer"
    return False, f"{response.status} {reason}".replace("\n", " ")


def main() -> None:
    if len(sys.argv) > 1:
        print(
            "rates-probe: takes no arguments; it probes the API at RATES_HOST and RATES_PORT",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        host, port = target(os.environ)
    except SettingsError as exc:
        print(f"rates-probe: {exc}", file=sys.stderr)
        sys.exit(2)
    ready, what = probe(host, port)
    print(f"rates-probe: {url(host, port)}: {what}", file=sys.stdout if ready else sys.stderr)
    sys.exit(0 if ready else 1)


if __name__ == "__main__":
    main()
