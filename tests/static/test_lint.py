"""Linters and formatters over the repository: part of the test command, all clean.

Each runs the tool the dev shell provides (and .ci/run installs); a missing
tool skips its test with the command that installs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def tracked(*patterns: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(set(out.stdout.split()))


def shell_scripts() -> list[str]:
    scripts = []
    for name in tracked():
        path = ROOT / name
        # .envrc is sourced by bash (and direnv's bash), never run: no shebang.
        if (
            path.suffix == ".sh"
            or name == ".envrc"
            or (
                path.is_file()
                and path.read_bytes()[:32].startswith(b"#!")
                and b"bash" in path.read_bytes()[:32]
            )
        ):
            scripts.append(name)
    return scripts


def run(tool: str, *args: str, install: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed: {install}")
    result = subprocess.run([tool, *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"{tool} {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_ruff_lint() -> None:
    run("ruff", "check", "--no-cache", ".", install="pip install -e '.[lint]'")


def test_ruff_format() -> None:
    run("ruff", "format", "--no-cache", "--check", ".", install="pip install -e '.[lint]'")


def test_mypy() -> None:
    # pyproject.toml's [tool.mypy] names the files and the strictness. The dev shell
    # has no mypy (nor stubs for psycopg2): a venv with the `lint` extra has.
    run(
        "mypy",
        "--no-incremental",
        install="python3 -m venv .venv && .venv/bin/pip install -e '.[lint]'",
    )


def test_shellcheck() -> None:
    scripts = shell_scripts()
    # Every step of the local stack, what they share, and the ways to start it.
    stack = set(tracked("stack/*"))
    assert stack >= {"stack/about", "stack/lib.sh", "stack/env.sh"}
    assert {".ci/run", ".envrc", "nix/dev.sh", *stack} <= set(scripts)
    # .shellcheckrc: it follows what they source (stack/lib.sh, stack/env.sh).
    run("shellcheck", *scripts, install="apt-get install shellcheck")


def test_the_local_stack_is_wiring() -> None:
    """process-compose.yaml names programs, order and probes; its logic lives in stack/."""
    config = yaml.safe_load((ROOT / "process-compose.yaml").read_text())
    commands = {}
    for name, process in config["processes"].items():
        commands[name] = process["command"]
        for probe in ("readiness_probe", "liveness_probe"):
            if probe in process:
                commands[f"{name} {probe}"] = process[probe]["exec"]["command"]
    long = {name: c for name, c in commands.items() if len(c.strip().splitlines()) > 5}
    assert long == {}


def test_yamllint() -> None:
    files = tracked("*.yaml", "*.yml")
    assert "process-compose.yaml" in files
    run("yamllint", "--strict", *files, install="pip install -e '.[lint]'")


def test_nix_files_parse() -> None:
    files = tracked("*.nix")
    assert "flake.nix" in files
    if shutil.which("nix-instantiate") is None:
        pytest.skip("nix-instantiate is not installed: .ci/install-nix-tools (or use Nix)")
    for name in files:
        # Parsing needs no store; dummy:// keeps nix from opening one.
        run("nix-instantiate", "--store", "dummy://", "--parse", name, install="")


def test_nix_format() -> None:
    # The flake's `formatter` and `checks.nix-format` run the same tool.
    run("nixpkgs-fmt", "--check", *tracked("*.nix"), install=".ci/install-nix-tools")


def test_nix_dead_code() -> None:
    run("deadnix", "--fail", *tracked("*.nix"), install=".ci/install-nix-tools")
