"""OpenTofu on copies of cloud/'s root modules, for the `cloud` test level.

Each module runs from a copy in a temporary directory, with the one file it
reads outside cloud/ (the address plan): `tofu init` writes .terraform/ and a
lock file beside the module, which must not land in the checkout. The
repository commits no lock file (docs/cloud.md says why), so the providers are
whichever the user's OpenTofu installs: the registry's, or a local mirror that
TF_CLI_CONFIG_FILE names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testlib import ROOT

MODULES = ("aws", "hetzner")
# What the modules read outside cloud/.
COPIED = ("cloud", "nix/hosts/cluster/network.json")

INSTALL_TOFU = (
    "OpenTofu (tofu) is not on PATH: install it (https://opentofu.org/docs/intro/install/, "
    "or `nix shell nixpkgs#opentofu`), then run `pytest -m cloud`"
)
# What `tofu init` says when it cannot reach what it installs: the registry's
# providers, or nixos-anywhere's modules on GitHub.
UNREACHABLE = re.compile(
    r"Failed to query available provider packages|Failed to install provider|"
    r"Failed to download module|could not download module|Error accessing remote module registry"
)
INSTALL_PROVIDERS = (
    "`tofu init` could not install the providers (from the OpenTofu registry) or "
    "nixos-anywhere's modules (from github.com), neither of which CI here can reach. Where "
    "they are reachable, they install themselves; elsewhere, build the providers into a "
    "filesystem_mirror named by the file TF_CLI_CONFIG_FILE points to, and point git at a copy "
    "of nixos-anywhere (url.<copy>.insteadOf https://github.com/nix-community/nixos-anywhere.git): "
    'docs/cloud.md, "What is tested where". tofu said:\n'
)


def tofu() -> str:
    """The tofu binary, or skip saying how to install it."""
    path = shutil.which("tofu")
    if path is None:
        pytest.skip(INSTALL_TOFU)
    return path


class Workdir:
    """A copy of cloud/ (and the address plan) in which one root module runs."""

    def __init__(self, base: Path, module: str) -> None:
        for name in COPIED:
            source, target = ROOT / name, base / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(
                    source,
                    target,
                    ignore=shutil.ignore_patterns(
                        ".terraform", ".terraform.lock.hcl", "*.tfstate*"
                    ),
                )
            else:
                shutil.copy2(source, target)
        self.root = base
        self.path = base / "cloud" / module

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tofu(), *args],
            cwd=self.path,
            env={**os.environ, "TF_IN_AUTOMATION": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def init(self) -> None:
        """`tofu init`, or skip if what it installs cannot be reached from here."""
        result = self.run("init", "-input=false", "-no-color")
        if result.returncode != 0 and UNREACHABLE.search(result.stderr):
            pytest.skip(INSTALL_PROVIDERS + result.stderr.strip())
        assert result.returncode == 0, f"tofu init:\n{result.stdout}{result.stderr}"
