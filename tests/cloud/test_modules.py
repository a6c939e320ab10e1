"""cloud/'s OpenTofu modules offline: formatted, valid, and their `tofu test` suites.

The suites (cloud/*/tests/*.tftest.hcl) plan each layout with mock providers: no
cloud account, no network, no Nix (the `external` data source that runs `nix build`
is mocked, and a plan runs no provisioner). test_moto.py applies the AWS module for
real, against an emulator.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from testlib.figures import figures
from testlib.tofu import MODULES, ROOT, Workdir, tofu


@pytest.fixture(scope="module", params=MODULES)
def module(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    workdir = Workdir(tmp_path_factory.mktemp(request.param), request.param)
    workdir.init()
    return workdir


def test_formatted() -> None:
    result = subprocess.run(
        [tofu(), "fmt", "-check", "-recursive", "-diff", "-no-color", "cloud"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"`tofu fmt -recursive cloud` would change:\n{result.stdout}{result.stderr}"
    )


def test_valid(module: Workdir) -> None:
    result = module.run("validate", "-no-color")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The configuration is valid." in result.stdout


def run_blocks(path: Path) -> list[str]:
    """The names of the `run` blocks of a module's tofu test files, in order."""
    return [
        name
        for test_file in sorted((path / "tests").glob("*.tftest.hcl"))
        for name in re.findall(r'^run "([^"]+)"', test_file.read_text(), re.MULTILINE)
    ]


def test_mocked_plans(module: Workdir) -> None:
    result = module.run("test", "-no-color")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    passed = re.findall(r'^  run "([^"]+)"\.\.\. pass$', out, re.MULTILINE)
    expected = run_blocks(module.path)
    # Each layout's plan, and the inputs that must be refused.
    assert {"cluster", "single", "cluster_without_a_password_file"} <= set(expected)
    assert passed == expected, out
    assert f"Success! {len(expected)} passed, 0 failed." in out, out
    figures(f"tofu test, cloud/{module.path.name}", passed=len(passed), runs=" ".join(passed))
