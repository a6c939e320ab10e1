"""The cluster of nix/hosts/cluster.nix on a closed network of namespaces, once per module.

Needs root (network namespaces), and runs every process on the hosts as the owner of
the checkout, which must not be root: PostgreSQL refuses to run as root, and the
hosts' processes need to read the checkout and its venv.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testlib import ROOT
from testlib.cluster import Cluster
from testlib.data import REFERENCE_DUMP
from testlib.figures import figures
from testlib.netns import User

HOW = (
    'sudo env "PATH=$PATH:/usr/sbin:/sbin" PYTHONDONTWRITEBYTECODE=1 .venv/bin/pytest '
    "-p no:cacheprovider -m cluster (as bash .ci/run does; docs/testing.md)"
)
TOOLS = {
    "ip": "apt-get install iproute2",
    "iptables": "apt-get install iptables",
    "setpriv": "apt-get install util-linux",
    "haproxy": "apt-get install haproxy",
    "socat": "apt-get install socat",
    "jq": "apt-get install jq",
    "curl": "apt-get install curl",
    "initdb": "put PostgreSQL's bin directory on PATH (Debian: /usr/lib/postgresql/<version>/bin)",
    "rates-serve": "pip install -e '.[test]' and put the venv's bin directory on PATH",
}


def require_root() -> User:
    """Skip unless the network can be built and its processes run unprivileged; the user."""
    if os.geteuid() != 0:
        pytest.skip(f"the cluster tests build network namespaces, which needs root: {HOW}")
    missing = [f"{tool} ({how})" for tool, how in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        # sudo replaces PATH, and a user's PATH often lacks /usr/sbin (haproxy, ip).
        pytest.skip(f"not found on PATH={os.environ.get('PATH', '')}: {'; '.join(missing)}")
    user = User.owning(ROOT)
    if user.uid == 0:
        pytest.skip(
            f"{ROOT} belongs to root; the hosts' processes run as the checkout's owner, "
            "who must not be root (PostgreSQL refuses root): run from a checkout of your own "
            f"user, {HOW}"
        )
    return user


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    user = require_root()
    # Every host's files (its /run, data, logs), the user's alone: not under
    # pytest's tmp_path, which root's run makes where the user cannot enter.
    work = Path(tempfile.mkdtemp(prefix="rates-cluster-"))
    os.chown(work, user.uid, user.gid)
    c = Cluster(work, user, REFERENCE_DUMP if REFERENCE_DUMP.is_file() else None)
    up = False
    try:
        checked = c.up(secrets.token_hex(24))
        figures("closed network, checked before any traffic", **checked)
        up = True
        yield c
    finally:
        if not up:
            capture = request.config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                show_logs(c)
        c.down()
        left = c.net.exists()
        processes = subprocess.run(
            ["pgrep", "-a", "-u", str(user.uid), "-f", str(work)], capture_output=True, text=True
        ).stdout
        shutil.rmtree(work, ignore_errors=True)
        assert not left, f"namespaces left behind: {left}"
        assert not processes, f"processes left behind:\n{processes}"


def show_logs(c: Cluster) -> None:
    for path, text in c.logs().items():
        lines = text.splitlines()
        print(f"--- {path} (last 60 of {len(lines)} lines) ---")
        print("\n".join(lines[-60:]))


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, failed: Callable[[], bool]) -> Iterator[None]:
    """On a failed test, the hosts' logs (the module's cluster, if the test used it),
    printed past pytest's capture: teardown's output is not shown otherwise."""
    yield
    if failed() and "cluster" in request.fixturenames:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            show_logs(request.getfixturevalue("cluster"))
