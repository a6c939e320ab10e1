"""The cluster's deploy files, nix/hosts/cluster/, read and filled in as cluster.nix does.

network.json is the address plan; haproxy.cfg and pg_hba.conf are templates whose
@name@ placeholders both this module and cluster.nix's `fill` replace from it, and
api-environment.json is the API hosts' settings. tests/cluster checks that the two
renderings agree (`nix-instantiate --eval`), then runs what they produce.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testlib import ROOT

FILES = ROOT / "nix" / "hosts" / "cluster"


@dataclass(frozen=True)
class Plan:
    network: dict[str, Any]
    api_environment: dict[str, str]

    @classmethod
    def load(cls, files: Path = FILES) -> Plan:
        return cls(
            json.loads((files / "network.json").read_text()),
            json.loads((files / "api-environment.json").read_text()),
        )

    @property
    def api(self) -> dict[str, str]:
        """API host name -> address, in name order (as Nix's attrNames lists them)."""
        return dict(sorted(self.network["api"].items()))

    def hosts(self) -> dict[str, str]:
        """Every host the tests build -> its address: the deployed ones and the client."""
        return {
            "db": self.network["db"],
            **self.api,
            "lb": self.network["lb"],
            "client": self.network["client"],
        }

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(
            f"{self.network['db']}/{self.network['prefixLength']}"
        ).network

    def port(self, role: str) -> int:
        return int(self.network["ports"][role])

    def _fill(self, template: str) -> str:
        api_servers = "\n".join(
            f"  server {name} {address}:{self.port('api')}" for name, address in self.api.items()
        )
        values = {
            "apiSubnet": self.network["apiSubnet"],
            "lbPort": str(self.port("lb")),
            "backend": self.network["haproxy"]["backend"],
            "adminSocket": self.network["haproxy"]["adminSocket"],
            "apiServers": api_servers,
        }
        return re.sub(r"@(\w+)@", lambda m: values[m.group(1)], template)

    def haproxy_config(self) -> str:
        return self._fill((FILES / "haproxy.cfg").read_text())

    def pg_hba(self) -> str:
        return self._fill((FILES / "pg_hba.conf").read_text())
