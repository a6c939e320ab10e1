#!/usr/bin/env python3
"""Stand-in for the programs the cloud path calls, linked under their names.

Each call is recorded as one JSON file in the directory $RATES_TEST_RECORD, named so
that they sort in the order they were made. Nothing is built, installed or connected to.
  nix build ... ATTRIBUTE   prints a made-up store path for it, as `nix build --json` does
                            (what nixos-anywhere's nix-build module reads);
  nix run ... -- ARGS       nixos-anywhere, as its install module calls it: records the
                            arguments and the files of its --extra-files directory (mode,
                            sha256);
  nixos-rebuild ARGS        records the arguments (nix/deploy.sh's switch);
  on NAME COMMAND...        nix/deploy.sh's RATES_DEPLOY_ON: a host where every command
                            succeeds, whose HAProxy reports every API host UP and idle;
  anything else (ssh)       exits 1: the tests expect no other call.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path


def store_path(attribute: str) -> str:
    """/nix/store/HASH-KIND-CONFIGURATION: one per attribute, named after what it is."""
    configuration = attribute.split("nixosConfigurations.", 1)[1].split(".", 1)[0]
    kind = "nixos-system" if attribute.endswith(".toplevel") else "disko"
    digest = hashlib.sha256(attribute.encode()).hexdigest()[:32]
    return f"/nix/store/{digest}-{kind}-{configuration}"


def tree(directory: Path) -> dict[str, dict[str, str]]:
    """Every file and directory below `directory`: its mode and, for files, its sha256."""
    entries = {}
    for path in sorted(directory.rglob("*")):
        entry = {"mode": oct(path.stat().st_mode & 0o7777)}
        if path.is_file():
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        entries[str(path.relative_to(directory))] = entry
    return entries


def on_host(command: list[str]) -> None:
    """What a host answers nix/deploy.sh: HAProxy's `show stat` (fields 1, 2, 5 and 18)."""
    if "socat" in command:
        # Read the command as socat does: a writer into a pipe no one reads may die of
        # SIGPIPE, and nix/deploy.sh's pipefail takes that for HAProxy not answering.
        sys.stdin.read()
        plan = json.loads(Path(os.environ["RATES_DEPLOY_NETWORK"]).read_text())
        for name in plan["api"]:
            print(",".join([plan["haproxy"]["backend"], name, "", "", "0", *[""] * 12, "UP"]))
    elif "--dump-header" in command:
        print("HTTP/1.1 200 OK\r\nRates-Build: stand-in\r\n\r")


def main() -> int:
    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    record: dict[str, object] = {"tool": tool, "args": args}
    status = 0
    if tool == "nix" and args[:1] == ["build"]:
        out = store_path(args[-1])
        print(json.dumps([{"drvPath": f"{out}.drv", "outputs": {"out": out}}]))
    elif tool == "nix" and args[:1] == ["run"] and "--" in args:
        anywhere = args[args.index("--") + 1 :]
        record["nixos_anywhere"] = anywhere
        if "--extra-files" in anywhere:
            record["extra_files"] = tree(Path(anywhere[anywhere.index("--extra-files") + 1]))
    elif tool == "on":
        on_host(args[1:])
    elif tool != "nixos-rebuild":
        print(f"{tool} (test stand-in): unexpected call: {args}", file=sys.stderr)
        status = 1
    record_dir = Path(os.environ["RATES_TEST_RECORD"])
    (record_dir / f"{time.time_ns():020d}-{os.getpid()}.json").write_text(json.dumps(record))
    return status


if __name__ == "__main__":
    sys.exit(main())
