"""Later releases of the cloud hosts: `RATES_DEPLOY_PREFIX=CLOUD- nix run .#deploy`.

nix/deploy.sh with nixos-rebuild and the hosts replaced by the stand-in (standin/): it
must switch, one host at a time and in the rolling upgrade's order, the nixosConfiguration
that cloud/ installed on each host (CLOUD-NAME), at the address the ssh_config from
tofu's outputs maps (network.json's). How deploy.sh drains and waits is tested on real
hosts by the cluster level.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testlib.tofu import ROOT

STANDIN = Path(__file__).resolve().parent / "standin" / "recorder.py"
NETWORK = ROOT / "nix" / "hosts" / "cluster" / "network.json"


@pytest.mark.parametrize("cloud", ["aws", "hetzner"])
def test_deploy_switches_each_host_to_its_cloud_configuration(cloud: str, tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip(
            "jq is not installed (nix/deploy.sh reads the address plan with it): apt-get install jq"
        )
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for name in ("nixos-rebuild", "on", "ssh"):
        (bin_dir / name).symlink_to(STANDIN)
    result = subprocess.run(
        ["bash", str(ROOT / "nix" / "deploy.sh")],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "RATES_TEST_RECORD": str(record),
            "RATES_DEPLOY_NETWORK": str(NETWORK),
            "RATES_DEPLOY_ON": str(bin_dir / "on"),
            "RATES_DEPLOY_PREFIX": f"{cloud}-",
            "RATES_DEPLOY_TIMEOUT": "10",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    calls = [json.loads(p.read_text()) for p in sorted(record.iterdir())]
    assert [c for c in calls if c["tool"] == "ssh"] == []
    plan = json.loads(NETWORK.read_text())
    order = [("db", plan["db"]), *sorted(plan["api"].items()), ("lb", plan["lb"])]
    assert [c["args"] for c in calls if c["tool"] == "nixos-rebuild"] == [
        ["switch", "--flake", f".#{cloud}-{name}", "--target-host", f"root@{address}"]
        for name, address in order
    ]
