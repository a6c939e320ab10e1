"""A real single-node Kubernetes (testlib/kubernetes.py) for the module, with stand-in images.

Needs root (network, PID and mount namespaces; containerd), the programs
.ci/install-kubernetes builds and Debian's etcd-server, containerd, runc and
containernetworking-plugins. The images are the compose level's stand-ins, built here
with podman from Debian's packages (testlib/containers.py says what they share with
the real ones), and a pause image from the pause program the installer compiles.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testlib import containers
from testlib import kubernetes as k8s
from testlib.figures import figures

HOW = (
    'sudo env "PATH=$PATH" .venv/bin/pytest -p no:cacheprovider -m kubernetes '
    "(as bash .ci/run does; docs/kubernetes.md)"
)
IMAGE_TOOLS = {
    "podman": "apt-get install podman runc",
    "nix-instantiate": "apt-get install nix-bin (it reads the image's settings from nix/image.nix)",
    "pg_config": "apt-get install libpq-dev postgresql",
}


def require() -> None:
    """Skip, saying what is missing and how to get it, unless the node can run here."""
    if os.geteuid() != 0:
        pytest.skip(f"the kubernetes level builds namespaces and runs containerd as root: {HOW}")
    problems = k8s.missing() + [
        f"{tool} is not on PATH ({os.environ.get('PATH', '')}): {how}"
        for tool, how in IMAGE_TOOLS.items()
        if shutil.which(tool) is None
    ]
    if problems:
        pytest.skip("; ".join(problems))


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest) -> Iterator[k8s.Node]:
    require()
    name = k8s.run_name()
    work = Path(tempfile.mkdtemp(prefix=f"rates-kubernetes-images-{name}-"))
    env = containers.podman_env(work)
    stale = k8s.destroy_stale(env)
    if stale:
        print(f"\nremoved what runs that died left: {stale}")
    images = {
        "rates-1": f"localhost/rates-standin-{name}:1",
        "rates-2": f"localhost/rates-standin-{name}:2",
        "postgres": f"localhost/postgres-standin-{name}:17",
        "pause": f"localhost/pause-standin-{name}:{k8s.PAUSE_VERSION}",
    }
    node = None
    try:
        started = time.monotonic()
        containers.build_rates_image(images["rates-1"], work, env)
        # The second release: the same image under the next tag, as a registry
        # would hold it; the release's RATES_BUILD tells the two apart.
        subprocess.run(
            ["podman", "tag", images["rates-1"], images["rates-2"]],
            env=env,
            check=True,
            capture_output=True,
        )
        containers.build_postgres_image(images["postgres"], work, env)
        pause = k8s.pause_binary()
        assert pause is not None
        containers.build_pause_image(images["pause"], pause, work, env)
        figures("stand-in images built with podman", seconds=round(time.monotonic() - started, 1))
        node = k8s.Node(name, images, env)
        up = False
        try:
            figures("single-node cluster up, closed network checked first", **node.up())
            up = True
            yield node
        finally:
            # A failed test shows them itself (logs_on_failure).
            if not up:
                show_logs(request, node)
    finally:
        left = node.down() if node else {}
        subprocess.run(
            ["podman", "rmi", "--force", *images.values()],
            env=env,
            capture_output=True,
            timeout=300,
        )
        shutil.rmtree(work, ignore_errors=True)
        assert not any(left.values()), f"left behind: {left}"


def show_logs(request: pytest.FixtureRequest, node: k8s.Node) -> None:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for name in node.procs:
            print(f"--- {name} (last 40 lines) ---\n{node.log_tail(name)}")


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, failed: Callable[[], bool]) -> Iterator[None]:
    """On a failed test, the node's logs and the namespace's events, past pytest's capture."""
    yield
    if failed() and "node" in request.fixturenames:
        node = request.getfixturevalue("node")
        show_logs(request, node)
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(
                node.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout
            )
            print(node.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout)
