"""kubernetes/ (kustomize) rendered, then applied to a real single-node cluster built here.

The manifests are the repository's, unchanged, with two test settings in a temporary
overlay of the dev overlay: the stand-in images in place of the real ones (kustomize
`images:`; the official postgres image becomes the compose level's PostgreSQL stand-in),
and RATES_BUILD, to tell releases apart. The reference dump reaches the seed Job through
components/seed-dump, on a volume the test provides as an operator would (a
PersistentVolumeClaim bound to a hostPath volume on the one node); so does the dev
PostgreSQL's volume, as no storage provisioner runs here.

What this proves and what only a real cluster proves: docs/kubernetes.md. Each test
prints its figures (`pytest -m kubernetes -s`); the tests run in order on one deployment.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from testlib import ROOT
from testlib import kubernetes as k8s
from testlib.data import REFERENCE_DUMP, contract_cases
from testlib.figures import figures
from testlib.sample import JANUARY, JANUARY_BODY
from testlib.serve import Load, check_contract, get, wait_until

MANIFESTS = ROOT / "kubernetes"
VERSION = importlib.metadata.version("rates")
NAMESPACE = f"rates-{secrets.token_hex(3)}"
PASSWORD = secrets.token_hex(24)


# --- rendering (kubectl kustomize; no cluster) ---------------------------------------------


def kubectl_local(*args: str) -> subprocess.CompletedProcess[str]:
    problems = [
        p for p in k8s.missing() if p.startswith(("kubectl", shutil.which("kubectl") or "-"))
    ]
    if problems:
        pytest.skip("; ".join(problems))
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=120)


def copy_manifests(to: Path) -> Path:
    """kubernetes/ copied, with the dev overlay's password file a user would create."""
    shutil.copytree(MANIFESTS, to / "kubernetes")
    (to / "kubernetes/overlays/dev/pgpassword").write_text(PASSWORD + "\n")
    return to / "kubernetes"


def render(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    result = kubectl_local("kustomize", str(path))
    assert result.returncode == 0, result.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout)}


def generated(objects: dict[tuple[str, str], Any], kind: str, name: str) -> dict[str, Any]:
    """The object kustomize generated as NAME-<hash>."""
    (found,) = [o for (k, n), o in objects.items() if k == kind and n.startswith(f"{name}-")]
    return found


def pod_spec(objects: dict[tuple[str, str], Any], kind: str, name: str) -> dict[str, Any]:
    return objects[(kind, name)]["spec"]["template"]["spec"]


def check_hardened(spec: dict[str, Any], user: int) -> None:
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def password_file(container: dict[str, Any], spec: dict[str, Any], secret: str) -> None:
    """The password: a file of the Secret, named by *PASSWORD_FILE; no value in the env."""
    env = {e["name"]: e for e in container["env"]}
    file_var = "PGPASSWORD_FILE" if "PGPASSWORD_FILE" in env else "POSTGRES_PASSWORD_FILE"
    assert env[file_var]["value"] == "/run/secrets/rates-db/password"
    assert not {"PGPASSWORD", "POSTGRES_PASSWORD"} & set(env)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["db-password"]["secret"]["secretName"] == secret
    assert volumes["db-password"]["secret"]["items"] == [{"key": "password", "path": "password"}]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["db-password"] == {
        "name": "db-password",
        "mountPath": "/run/secrets/rates-db",
        "readOnly": True,
    }


def test_base_renders_the_api(tmp_path: Path) -> None:
    objects = render(copy_manifests(tmp_path) / "base")
    config = generated(objects, "ConfigMap", "rates")
    assert sorted(objects) == sorted(
        [
            ("ConfigMap", config["metadata"]["name"]),
            ("Deployment", "rates"),
            ("Job", "rates-seed"),
            ("PodDisruptionBudget", "rates"),
            ("Service", "rates"),
        ]
    )
    assert "PGPASSWORD" not in config["data"] and "PGHOST" not in config["data"]
    deployment = objects[("Deployment", "rates")]["spec"]
    assert deployment["replicas"] == 2
    assert deployment["progressDeadlineSeconds"] == 120
    assert deployment["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    spec = pod_spec(objects, "Deployment", "rates")
    check_hardened(spec, 65534)
    (api,) = spec["containers"]
    # The image nix build .#image makes: rates:<pyproject.toml's version>.
    assert api["image"] == f"rates:{VERSION}"
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # The graceful stop: the kubelet's sleep (no shell in the image), then
    # gunicorn's 30 s graceful timeout, within the grace period.
    assert api["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert spec["terminationGracePeriodSeconds"] > 5 + 30
    assert api["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    password_file(api, spec, "rates-db")
    assert {v["name"]: v for v in spec["volumes"]}["tmp"] == {
        "name": "tmp",
        "emptyDir": {"sizeLimit": "64Mi"},
    }
    service = objects[("Service", "rates")]["spec"]
    assert service["selector"] == deployment["selector"]["matchLabels"]
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    pdb = objects[("PodDisruptionBudget", "rates")]["spec"]
    assert pdb == {"minAvailable": 1, "selector": deployment["selector"]}
    job = objects[("Job", "rates-seed")]["spec"]
    seed_spec = job["template"]["spec"]
    check_hardened(seed_spec, 65534)
    (seed,) = seed_spec["containers"]
    assert seed["command"] == ["rates-seed"] and seed["image"] == f"rates:{VERSION}"
    assert "RATES_DUMP" not in {e["name"] for e in seed["env"]}  # the sample data
    password_file(seed, seed_spec, "rates-db")
    assert seed_spec["restartPolicy"] == "Never"
    assert job["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]


def test_dev_overlay_adds_postgres_and_its_secret(tmp_path: Path) -> None:
    objects = render(copy_manifests(tmp_path) / "overlays/dev")
    secret = generated(objects, "Secret", "rates-db")
    config = generated(objects, "ConfigMap", "rates")
    assert config["data"]["PGHOST"] == "postgres"
    # The generated names reach every reference, the database's too.
    for kind, name in (("Deployment", "rates"), ("Job", "rates-seed"), ("StatefulSet", "postgres")):
        spec = pod_spec(objects, kind, name)
        (container,) = spec["containers"]
        password_file(container, spec, secret["metadata"]["name"])
    postgres = objects[("StatefulSet", "postgres")]["spec"]
    check_hardened(postgres["template"]["spec"], 999)
    (pg,) = postgres["template"]["spec"]["containers"]
    assert pg["image"] == "postgres:17"
    env = {e["name"]: e.get("value") for e in pg["env"]}
    # The API's role and database are the ones the image creates.
    assert env["POSTGRES_USER"] == config["data"]["PGUSER"]
    assert env["POSTGRES_DB"] == config["data"]["PGDATABASE"]
    # Nothing of the API's settings in the database's pod template: a new
    # setting (a new ConfigMap name) must not restart PostgreSQL.
    assert config["metadata"]["name"] not in json.dumps(postgres)
    (claim,) = postgres["volumeClaimTemplates"]
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert objects[("Service", "postgres")]["spec"]["ports"][0]["port"] == 5432


def test_prod_overlay_verifies_the_servers_certificate(tmp_path: Path) -> None:
    objects = render(copy_manifests(tmp_path) / "overlays/prod")
    config = generated(objects, "ConfigMap", "rates")["data"]
    assert config["PGSSLMODE"] == "verify-full"
    assert config["PGSSLROOTCERT"] == "/etc/rates/db-ca/ca.crt"
    assert not [k for k in objects if k[0] in ("Secret", "StatefulSet")]
    for kind, name in (("Deployment", "rates"), ("Job", "rates-seed")):
        spec = pod_spec(objects, kind, name)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["db-ca"]["configMap"]["name"] == "rates-db-ca"
        mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["db-ca"]["mountPath"] == "/etc/rates/db-ca"


def test_the_dev_overlay_needs_the_password_file_and_commits_none() -> None:
    """No password value in kubernetes/: without the user's file the dev overlay does not
    render, and says which file is missing."""
    # As root in another user's checkout (.ci/run's copy), git needs telling it is safe.
    tracked = subprocess.run(
        ["git", "-c", f"safe.directory={ROOT}", "-C", str(ROOT), "ls-files", "kubernetes"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "kubernetes/base/kustomization.yaml" in tracked
    assert "kubernetes/overlays/dev/pgpassword" not in tracked
    if (MANIFESTS / "overlays/dev/pgpassword").exists():
        pytest.skip("this checkout has a kubernetes/overlays/dev/pgpassword of its own")
    result = kubectl_local("kustomize", str(MANIFESTS / "overlays/dev"))
    assert result.returncode != 0
    assert "pgpassword" in result.stderr


# --- on the cluster --------------------------------------------------------------------------


class Deployment:
    """The test's namespace on the node, and its releases: temporary overlays of dev."""

    def __init__(self, node: k8s.Node) -> None:
        self.node = node
        self.dir = node.work / "manifests"
        self.dir.mkdir()
        self.manifests = copy_manifests(self.dir)
        self.dump = REFERENCE_DUMP if REFERENCE_DUMP.is_file() else None

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.node.kubectl(f"--namespace={NAMESPACE}", *args, **kw)

    def get(self, *args: str) -> Any:
        return self.node.get(f"--namespace={NAMESPACE}", *args)

    def release(self, n: int, *settings: str) -> Path:
        """The overlay of release n: the dev overlay with the stand-in images and these settings."""
        d = self.dir / f"release-{n}"
        d.mkdir(exist_ok=True)
        rates_ref, rates_tag = self.node.images[f"rates-{min(n, 2)}"].rsplit(":", 1)
        postgres_ref, postgres_tag = self.node.images["postgres"].rsplit(":", 1)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": NAMESPACE,
            "resources": ["../kubernetes/overlays/dev"],
            "components": ["../kubernetes/components/seed-dump"] if self.dump else [],
            "images": [
                {"name": "rates", "newName": rates_ref, "newTag": rates_tag},
                # The stand-in for the official postgres image (testlib/containers.py).
                {"name": "postgres", "newName": postgres_ref, "newTag": postgres_tag},
            ],
            "configMapGenerator": [
                {
                    "name": "rates",
                    "behavior": "merge",
                    "literals": [f"RATES_BUILD=release-{n}", *settings],
                }
            ],
        }
        (d / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return d

    def apply(self, n: int, *settings: str) -> None:
        """A new release, as docs/kubernetes.md says: the finished seed Job goes first."""
        self.kubectl("delete", "job", "rates-seed", "--ignore-not-found", "--wait=true")
        self.kubectl("apply", "-k", str(self.release(n, *settings)))

    def volumes(self) -> None:
        """What a storage provisioner and the operator would provide: the database's volume,
        and the dump's (components/seed-dump), each a hostPath volume on the one node."""
        data = self.dir / "postgres-data"
        data.mkdir(mode=0o700)
        os.chown(data, 999, 999)
        docs = [self._volume("postgres-data", data, "ReadWriteOnce", "1Gi", "data-postgres-0")]
        if self.dump:
            dump = self.dir / "dump"
            dump.mkdir(mode=0o755)
            shutil.copy(self.dump, dump / "rates.sql")
            (dump / "rates.sql").chmod(0o644)
            docs.append(self._volume("rates-dump", dump, "ReadOnlyMany", "100Mi", "rates-dump"))
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "rates-dump", "namespace": NAMESPACE},
                    "spec": {
                        "accessModes": ["ReadOnlyMany"],
                        "storageClassName": "",
                        "volumeName": f"{NAMESPACE}-rates-dump",
                        "resources": {"requests": {"storage": "100Mi"}},
                    },
                }
            )
        self.node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    @staticmethod
    def _volume(name: str, path: Path, mode: str, size: str, claim: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{NAMESPACE}-{name}"},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": [mode],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": NAMESPACE, "name": claim},
                "hostPath": {"path": str(path), "type": "Directory"},
            },
        }

    def wait_job(self, timeout: float = 300) -> tuple[str, float]:
        """Wait for the seed Job to finish; its final condition and how long it took."""
        started = time.monotonic()

        def finished() -> str | None:
            job = self.get("job", "rates-seed")
            for c in job.get("status", {}).get("conditions", []):
                if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                    return c["type"]
            return None

        return wait_until(finished, "the seed Job", timeout=timeout, interval=1), (
            time.monotonic() - started
        )

    def seed_log(self) -> str:
        return self.kubectl("logs", "job/rates-seed").stdout

    def rollout(self, what: str = "deployment/rates", timeout: int = 300) -> float:
        started = time.monotonic()
        self.kubectl("rollout", "status", what, f"--timeout={timeout}s", timeout=timeout + 30)
        return time.monotonic() - started

    def api_pods(self) -> dict[str, dict[str, Any]]:
        """The API's pods that are not terminating, by name."""
        pods = self.get("pods", "--selector=app.kubernetes.io/component=api")["items"]
        return {p["metadata"]["name"]: p for p in pods if "deletionTimestamp" not in p["metadata"]}

    def service_url(self, name: str = "rates") -> str:
        return f"http://{self.get('service', name)['spec']['clusterIP']}"

    def probe(self) -> tuple[str, Any]:
        """A /rates request with data behind it, and its answer."""
        if self.dump is None:
            return JANUARY, JANUARY_BODY
        case = next(c for c in contract_cases() if c["path"] == "/rates" and c["status"] == 200)
        return f"/rates?{urllib.parse.urlencode(case['query'])}", case["body"]

    def load(self, name: str, max_seconds: float) -> Load:
        path, _ = self.probe()
        return Load(
            [self.service_url() + path],
            self.node.work / f"{name}.jsonl",
            concurrency=4,
            prefix=self.node.in_net(),
            max_seconds=max_seconds,
        )

    def builds(self, count: int = 12) -> Counter[str]:
        """Which release answers /healthz through the Service (its Rates-Build header)."""
        url = self.service_url() + "/healthz"

        def ask() -> Counter[str]:
            seen: Counter[str] = Counter()
            for _ in range(count):
                with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (the node's)
                    seen[r.headers["Rates-Build"]] += 1
            return seen

        return self.node.call(ask)


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def restarts(pods: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {
        name: sum(c["restartCount"] for c in p["status"].get("containerStatuses", []))
        for name, p in pods.items()
    }


def failures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] != 200]


@pytest.fixture(scope="module")
def cluster(node: k8s.Node) -> Deployment:
    node.kubectl("create", "namespace", NAMESPACE)
    # Pods need their namespace's default ServiceAccount, which a controller makes.
    wait_until(
        lambda: (
            node.kubectl(
                "get", "serviceaccount", "default", f"--namespace={NAMESPACE}", check=False
            ).returncode
            == 0
        ),
        "the namespace's default ServiceAccount",
    )
    return Deployment(node)


@pytest.fixture(scope="module")
def deployed(cluster: Deployment) -> dict[str, Any]:
    """The dev overlay applied to the empty namespace; what it took."""
    cluster.volumes()
    started = time.monotonic()
    cluster.kubectl("apply", "-k", str(cluster.release(1)))
    outcome, seed_s = cluster.wait_job(timeout=600)
    database_s = cluster.rollout("statefulset/postgres")
    api_s = cluster.rollout()
    return {
        "seed": outcome,
        "seed_log": cluster.seed_log(),
        "figures": {
            "seed_job_done_s": round(seed_s, 1),
            "postgres_ready_s": round(database_s, 1),
            "rollout_ready_s": round(api_s, 1),
            "total_s": round(time.monotonic() - started, 1),
        },
    }


def test_server_side_dry_run_of_base_and_overlays(cluster: Deployment) -> None:
    """The API server accepts every object of the base and of each overlay."""
    expected = {
        "base": {
            "configmap/rates",
            "service/rates",
            "deployment.apps/rates",
            "poddisruptionbudget.policy/rates",
            "job.batch/rates-seed",
        },
        "overlays/prod": set(),
        "overlays/dev": {"secret/rates-db", "service/postgres", "statefulset.apps/postgres"},
    }
    expected["overlays/prod"] = expected["base"]
    expected["overlays/dev"] |= expected["base"]
    counts = {}
    for path, objects in expected.items():
        result = cluster.kubectl("apply", "--dry-run=server", "-k", str(cluster.manifests / path))
        lines = result.stdout.splitlines()
        assert all(line.endswith(" created (server dry run)") for line in lines), lines
        names = {line.split()[0] for line in lines}
        # Generated names carry a hash: configmap/rates-<hash>.
        unhashed = {
            n if n.split("/")[0] not in ("configmap", "secret") else n.rsplit("-", 1)[0]
            for n in names
        }
        assert unhashed == objects, (path, lines)
        counts[path.replace("overlays/", "")] = len(lines)
    figures("server-side dry run: objects accepted", **counts)


def test_dev_overlay_from_nothing(cluster: Deployment, deployed: dict[str, Any]) -> None:
    """The seed Job completes, the rollout is ready, and every contract case answers
    through the Service."""
    assert deployed["seed"] == "Complete", deployed["seed_log"]
    assert "loaded " in deployed["seed_log"], deployed["seed_log"]
    pods = cluster.api_pods()
    assert len(pods) == 2 and all(ready(p) for p in pods.values()), pods.keys()
    url = cluster.service_url()
    if cluster.dump:
        checked = cluster.node.call(check_contract, url, contract_cases())
    else:
        path, body = cluster.probe()
        assert cluster.node.call(get, url + path) == (200, body)
        checked = 1
    # The API found PostgreSQL by its Service's name (PGHOST=postgres), through the
    # cluster's DNS, and the Service's address.
    figures("dev overlay from nothing", contract_cases=checked, **deployed["figures"])


def test_pod_deleted_under_load(cluster: Deployment, deployed: dict[str, Any]) -> None:
    """An API pod deleted (its graceful stop: preStop sleep, then gunicorn's) loses no
    request, and the ReplicaSet replaces it."""
    before = cluster.api_pods()
    victim = sorted(before)[0]
    load = cluster.load("pod-delete", max_seconds=180)
    time.sleep(2)  # requests before the fault
    started = time.monotonic()
    cluster.kubectl("delete", "pod", victim, "--wait=false")

    def replaced() -> bool:
        pods = cluster.get("pods", "--selector=app.kubernetes.io/component=api")["items"]
        names = {p["metadata"]["name"] for p in pods}
        return victim not in names and len(pods) == 2 and all(ready(p) for p in pods)

    wait_until(replaced, "the deleted pod's replacement, and the pod gone", 120, interval=0.5)
    replaced_s = time.monotonic() - started
    time.sleep(2)  # requests after
    records = load.stop()
    bad = failures(records)
    figures(
        "API pod deleted under load",
        requests=len(records),
        failed=len(bad),
        replaced_and_gone_s=round(replaced_s, 1),
    )
    assert not bad, Counter(r["status"] for r in bad)


def test_rolling_update_under_load(cluster: Deployment, deployed: dict[str, Any]) -> None:
    """A new release (another image tag and RATES_BUILD) rolls out with 0 failed requests."""
    before = cluster.api_pods()
    assert cluster.builds() == Counter({f"{VERSION}+release-1": 12})
    load = cluster.load("rolling-update", max_seconds=400)
    time.sleep(2)
    started = time.monotonic()
    cluster.apply(2)
    rollout_s = cluster.rollout()
    time.sleep(2)
    records = load.stop()
    bad = failures(records)
    after = cluster.api_pods()
    figures(
        "rolling update to a new release under load",
        requests=len(records),
        failed=len(bad),
        rollout_s=round(rollout_s, 1),
        applied_to_rolled_out_s=round(time.monotonic() - started, 1),
    )
    assert not bad, Counter(r["status"] for r in bad)
    assert len(after) == 2 and not set(after) & set(before)
    assert cluster.builds() == Counter({f"{VERSION}+release-2": 12})
    outcome, _ = cluster.wait_job()
    assert outcome == "Complete" and "nothing to do" in cluster.seed_log()


def test_broken_release_stops_at_its_deadline_and_undo_restores(
    cluster: Deployment, deployed: dict[str, Any]
) -> None:
    """A release whose pods cannot start (a bad setting) stops at progressDeadlineSeconds
    while the old pods serve, with 0 failed; `kubectl rollout undo` restores it."""
    before = cluster.api_pods()
    load = cluster.load("broken-release", max_seconds=500)
    time.sleep(2)
    started = time.monotonic()
    cluster.apply(3, "RATES_WORKERS=0")
    stopped = cluster.kubectl(
        "rollout", "status", "deployment/rates", "--timeout=400s", check=False, timeout=430
    )
    deadline_s = time.monotonic() - started
    assert stopped.returncode != 0
    assert 'deployment "rates" exceeded its progress deadline' in stopped.stderr, stopped
    conditions = {c["type"]: c for c in cluster.get("deployment", "rates")["status"]["conditions"]}
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    # The old pods, untouched, and one new pod that says why it cannot start.
    pods = cluster.api_pods()
    (new,) = set(pods) - set(before)
    assert set(before) < set(pods) and all(ready(pods[p]) for p in before)
    log = cluster.kubectl("logs", new, "--previous", check=False).stdout
    assert "RATES_WORKERS: expected an integer from 1 to 64" in log, log
    undo_started = time.monotonic()
    cluster.kubectl("rollout", "undo", "deployment/rates")
    cluster.rollout()
    undo_s = time.monotonic() - undo_started
    time.sleep(2)
    records = load.stop()
    bad = failures(records)
    figures(
        "broken release: stopped at its deadline, then rollout undo, under load",
        requests=len(records),
        failed=len(bad),
        deadline_reached_s=round(deadline_s, 1),
        undo_s=round(undo_s, 1),
    )
    assert not bad, Counter(r["status"] for r in bad)
    assert set(cluster.api_pods()) == set(before)
    assert cluster.builds() == Counter({f"{VERSION}+release-2": 12})


def test_postgres_pod_deleted_under_load(cluster: Deployment, deployed: dict[str, Any]) -> None:
    """PostgreSQL's pod deleted: the API answers JSON 503s while it is away, then correct
    answers to every request sent once one has come back, and no API pod restarts or leaves
    the Service."""
    pods_before = cluster.api_pods()
    restarts_before = restarts(pods_before)
    old_uid = cluster.get("pod", "postgres-0")["metadata"]["uid"]
    load = cluster.load("postgres-delete", max_seconds=300)
    time.sleep(2)
    deleted = time.time()
    cluster.kubectl("delete", "pod", "postgres-0", "--wait=false")

    def back() -> bool:
        pod = cluster.get("pod", "postgres-0")
        return pod["metadata"]["uid"] != old_uid and ready(pod)

    wait_until(back, "PostgreSQL's new pod to be ready", 180, interval=0.5)
    postgres_ready = time.time()
    path, body = cluster.probe()
    url = cluster.service_url() + path
    wait_until(lambda: cluster.node.call(get, url) == (200, body), "a correct answer", 60)
    answered = time.time()
    time.sleep(3)
    records = load.stop()
    statuses = Counter(r["status"] for r in records)
    assert set(statuses) <= {200, 503}, statuses
    outage = [r for r in records if r["status"] == 503]
    assert outage, "no request met the outage"
    for r in outage:
        assert r["type"] == "application/json", r
        assert json.loads(r["body"])["error"] == "unavailable", r
    # A request sent before PostgreSQL was back may still be waiting for its connection
    # (RATES_CONNECT_TIMEOUT) and answer 503 after that: only the later ones must be 200s.
    settled = [r for r in records if r["start"] > answered]
    assert settled, "no request after the first correct answer"
    assert {r["status"] for r in settled} == {200}, [
        (round(r["start"] - deleted, 2), round(r["latency"], 2), r["status"]) for r in settled
    ]
    first_503 = min(r["start"] for r in outage)
    last_503 = max(r["start"] + r["latency"] for r in outage)
    if cluster.dump:
        cluster.node.call(check_contract, cluster.service_url(), contract_cases())
    pods_after = cluster.api_pods()
    assert set(pods_after) == set(pods_before)
    assert restarts(pods_after) == restarts_before
    # PostgreSQL stopped through its preStop hook (a fast shutdown), not at the
    # grace period's end.
    hook = cluster.get("events", "--field-selector=reason=FailedPreStopHook")["items"]
    assert not hook, [e["message"] for e in hook]
    figures(
        "PostgreSQL's pod deleted under load",
        requests=len(records),
        answered_503=len(outage),
        other_errors=len(records) - statuses[200] - statuses[503],
        first_503_after_delete_s=round(first_503 - deleted, 2),
        outage_s=round(last_503 - first_503, 2),
        slowest_503_s=round(max(r["latency"] for r in outage), 2),
        new_postgres_ready_after_delete_s=round(postgres_ready - deleted, 2),
        correct_answer_after_delete_s=round(answered - deleted, 2),
        api_restarts=sum(restarts(pods_after).values()) - sum(restarts_before.values()),
    )


def test_password_in_no_describe_env_argument_or_log(
    cluster: Deployment, deployed: dict[str, Any]
) -> None:
    node = cluster.node
    kinds = "pods,deployments,statefulsets,jobs,services,configmaps,secrets,replicasets"
    described = cluster.kubectl("describe", kinds).stdout
    assert "rates-db" in described and PASSWORD not in described
    # The objects as stored, but the Secret itself.
    listed = cluster.kubectl("get", kinds.replace(",secrets", ""), "-o", "yaml").stdout
    assert PASSWORD not in listed
    # Every process of the node and of its containers: environment and arguments.
    processes = node.processes()
    for pid in processes:
        for part in ("environ", "cmdline"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            assert PASSWORD.encode() not in data, (pid, part)
    # Every container's log, and the node's own programs' logs.
    pods = cluster.get("pods")["items"]
    logs = 0
    for pod in pods:
        for container in pod["spec"]["containers"]:
            text = cluster.kubectl(
                "logs", pod["metadata"]["name"], f"--container={container['name']}"
            ).stdout
            assert PASSWORD not in text, pod["metadata"]["name"]
            logs += 1
    for path in node.logs.iterdir():
        assert PASSWORD not in path.read_text(errors="replace"), path
        logs += 1
    figures(
        "password in no describe, env, argument or log",
        processes=len(processes),
        logs=logs,
        described_bytes=len(described),
    )


def test_second_seed_job_loads_nothing(cluster: Deployment, deployed: dict[str, Any]) -> None:
    """The seed Job applied again with the same data leaves the data as it was."""

    def loaded() -> str:
        return cluster.kubectl(
            "exec",
            "postgres-0",
            "--",
            "psql",
            "--username=rates",
            "--dbname=rates",
            "--no-align",
            "--tuples-only",
            "--command",
            "SELECT sha256, source, loaded_at, prices FROM rates_seed",
        ).stdout

    before = loaded()
    assert before.strip()
    cluster.kubectl("delete", "job", "rates-seed", "--ignore-not-found", "--wait=true")
    cluster.kubectl("apply", "-k", str(cluster.release(2)))
    outcome, seed_s = cluster.wait_job()
    log = cluster.seed_log()
    assert outcome == "Complete", log
    assert "nothing to do: the database already holds" in log, log
    assert loaded() == before
    figures("seed Job applied again", loaded_nothing=True, job_s=round(seed_s, 1))
