"""cloud/aws applied and destroyed for real, against moto (an AWS emulator) on loopback.

Mocked: AWS itself (moto's EC2, which keeps every resource it is asked for but runs no
machine) and the hand-off's two outside programs, `nix` and `ssh`, which stand-ins in
standin/ replace on PATH: the stand-in `nix` answers `nix build` with made-up store paths
and records nixos-anywhere's call (`nix run ...#nixos-anywhere -- ARGS`) without running
it; `ssh` must not be called at all. Real: OpenTofu, the AWS provider, nixos-anywhere's
OpenTofu modules and scripts, extra-files.sh, and every request to EC2's API.

Asserted: the resources in the state and in moto, the AMI chosen among NixOS-named
images of several owners, releases and architectures, the ports each security group
opens and to whom, what each host's install got (its system, its disk layout, its
public address, its files), that the password is nowhere in the state, and that
destroy leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testlib.figures import figures
from testlib.postgres import free_port
from testlib.tofu import ROOT, Workdir

MOTO = "moto[server] is not installed: pip install -e '.[test]'"
boto3 = pytest.importorskip("boto3", reason=MOTO)
pytest.importorskip("moto.server", reason=MOTO)
ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")

STANDIN = Path(__file__).resolve().parent / "standin" / "recorder.py"
NIXOS = "427812963091"  # the NixOS project's AWS account, which publishes its AMIs
REGION = "us-east-1"
CLUSTER = {"db": "10.0.0.10", "api1": "10.0.0.17", "api2": "10.0.0.18", "lb": "10.0.0.5"}
ROLES = ["api", "db", "lb"]
ADMIN = "198.51.100.0/24"
# moto takes any credentials; these keep any of the environment's away from it.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret (moto accepts any)
}


def image(ami_id: str, name: str, created: str, owner: str = NIXOS, arch: str = "x86_64") -> dict:
    return {
        "ami_id": ami_id,
        "name": name,
        "description": name,
        "owner_id": owner,
        "creation_date": f"{created}T00:00:00.000Z",
        "architecture": arch,
        "state": "available",
        "public": True,
        "image_type": "machine",
        "image_location": f"{owner}/{name}",
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "sriov": "simple",
        "platform": None,
    }


# The module must pick the newest x86_64 NixOS 25.11 image of the NixOS account:
# not an older 25.11, another release, another architecture, or another owner's
# image named like NixOS's.
EXPECTED_AMI = "ami-0b2511200000000a1"
EXPECTED_NAME = "nixos/25.11.2000.bbbbbbbbbbbb-x86_64-linux"
IMAGES = [
    image("ami-0b2505000000000a1", "nixos/25.05.806.650e572363c0-x86_64-linux", "2025-06-01"),
    image("ami-0b2511100000000a1", "nixos/25.11.1000.aaaaaaaaaaaa-x86_64-linux", "2025-12-01"),
    image(EXPECTED_AMI, EXPECTED_NAME, "2026-01-15"),
    image(
        "ami-0b2511300000000b1", "nixos/25.11.3000.cccc-aarch64-linux", "2026-02-01", arch="arm64"
    ),
    image(
        "ami-0b2511900000000c1", "nixos/25.11.9000.dddd-x86_64-linux", "2026-03-01", "123456789012"
    ),
    image("ami-0b2605100000000a1", "nixos/26.05.100.eeeeeeeeeeee-x86_64-linux", "2026-06-01"),
]


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[str]:
    """moto's server on a free loopback port with the images above; its endpoint."""
    amis = tmp_path / "amis.json"
    amis.write_text(json.dumps(IMAGES))
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MOTO_AMIS_PATH": str(amis)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            ec2(endpoint).describe_regions()
            break
        except Exception:
            assert server.poll() is None, (tmp_path / "moto.log").read_text()
            assert time.monotonic() < deadline, "moto did not answer within 30 s"
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)
    log.close()


def ec2(endpoint: str) -> Any:
    return boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    encoding, form = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    return key.public_bytes(encoding, form).decode()


def stored_password_file() -> str:
    """Where the hosts' configuration expects the password (nix/hosts/cloud.nix)."""
    if shutil.which("nix-instantiate") is None:
        pytest.skip("nix-instantiate is not installed: apt-get install nix-bin (or use Nix)")
    expr = f"(import {ROOT}/nix/hosts/cloud.nix).storedPasswordFile"
    result = subprocess.run(
        ["nix-instantiate", "--store", "dummy://", "--eval", "--json", "--expr", expr],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NIX_CONFIG": "build-users-group ="},
    )
    return json.loads(result.stdout)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def recorded(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.iterdir())]


def provider_override(endpoint: str) -> str:
    """An override file for the module's provider block: moto's endpoint.

    OpenTofu merges it into the module's own block, whose region and tags stay.
    """
    return f"""provider "aws" {{
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  endpoints {{
    ec2 = "{endpoint}"
    sts = "{endpoint}"
  }}
}}
"""


def expected_state() -> list[str]:
    hosts, roles = sorted(CLUSTER), ROLES
    ingress = [f"{r}-22-{ADMIN}" for r in roles] + ["db-5432-api", "api-3000-lb", "lb-80-0.0.0.0/0"]
    builds = [
        f'module.{m}["{h}"].data.external.nix-build'
        for m in ("system", "partitioner")
        for h in hosts
    ]
    return sorted(
        [
            "data.aws_ami.nixos",
            "aws_internet_gateway.main",
            "aws_key_pair.operator",
            "aws_route_table.main",
            "aws_route_table_association.main",
            "aws_subnet.main",
            "aws_vpc.main",
            *(f'aws_instance.host["{h}"]' for h in hosts),
            *(f'aws_security_group.role["{r}"]' for r in roles),
            *(f'aws_vpc_security_group_egress_rule.role["{r}"]' for r in roles),
            *(f'aws_vpc_security_group_ingress_rule.role["{k}"]' for k in ingress),
            *(f"module.install.{b}" for b in builds),
            *(f'module.install.module.install["{h}"].null_resource.nixos-remote' for h in hosts),
        ]
    )


def instances(client: Any) -> dict[str, dict]:
    """The running instances, by host name (their Name tag without "rates-")."""
    running = [{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    return {
        tag["Value"].removeprefix("rates-"): instance
        for reservation in client.describe_instances(Filters=running)["Reservations"]
        for instance in reservation["Instances"]
        for tag in instance.get("Tags", [])
        if tag["Key"] == "Name"
    }


def opened_ports(client: Any, vpc: str) -> tuple[list[str], dict[str, str]]:
    """Every port the VPC's security groups open: "PORTS/PROTOCOL from SOURCE to ROLE"."""
    in_vpc = [{"Name": "vpc-id", "Values": [vpc]}]
    groups = client.describe_security_groups(Filters=in_vpc)["SecurityGroups"]
    role = {g["GroupId"]: g["GroupName"].removeprefix("rates-") for g in groups}
    opened = sorted(
        f"{perm['FromPort']}-{perm['ToPort']}/{perm['IpProtocol']} from "
        f"{source.get('CidrIp') or role[source['GroupId']]} to {role[group['GroupId']]}"
        for group in groups
        if group["GroupName"] != "default"
        for perm in group["IpPermissions"]
        for source in perm.get("IpRanges", []) + perm.get("UserIdGroupPairs", [])
    )
    return opened, role


def assert_installed(call: dict, name: str, ip: str, key: str, password: str, stored: str) -> None:
    """One nixos-anywhere call: this host's disk layout and system, at its address, its files."""
    args = call["nixos_anywhere"]
    at = args.index("--store-paths")
    names = [path.split("-", 1)[1] for path in args[at + 1 : at + 3]]
    assert names == [f"disko-aws-{name}", f"nixos-system-aws-{name}"], args
    # Every phase, which nixos-anywhere runs in its own order.
    assert set(args[args.index("--phases") + 1].split(",")) == {
        "kexec",
        "disko",
        "install",
        "reboot",
    }
    assert args[-3:] == ["-p", "22", f"root@{ip}"], args
    files = call["extra_files"]
    modes = {"root": "0o700", "root/.ssh": "0o700", "root/.ssh/authorized_keys": "0o600"}
    if name != "lb":
        secrets_dir = {"var/lib/secrets": "0o700"}  # pragma: allowlist secret (a mode)
        modes |= {"var": "0o755", "var/lib": "0o755", **secrets_dir, stored: "0o400"}
    assert {path: entry["mode"] for path, entry in files.items()} == modes, (name, files)
    assert files["root/.ssh/authorized_keys"]["sha256"] == sha256(key + "\n")
    if name != "lb":
        assert files[stored]["sha256"] == sha256(password + "\n")


def test_cluster_applies_and_destroys_against_moto(moto: str, tmp_path: Path) -> None:
    work = Workdir(tmp_path / "repo", "aws")
    (work.path / "moto_override.tf").write_text(provider_override(moto))
    work.init()
    stored = stored_password_file().lstrip("/")

    # nix and ssh on PATH are the stand-in; the password and key are the test's own.
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    for name in ("nix", "ssh"):
        (bin_dir / name).symlink_to(STANDIN)
    password = secrets.token_hex(24)
    password_file = tmp_path / "rates-db-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    key = public_key()
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RATES_TEST_RECORD": str(record),
        **MOTO_CREDENTIALS,
    }
    variables = [
        "-var", f"ssh_public_key={key}",
        "-var", f'admin_cidrs=["{ADMIN}"]',
        "-var", f"password_file={password_file}",
        "-var", f"region={REGION}",
    ]  # fmt: skip

    start = time.monotonic()
    apply = work.run("apply", "-auto-approve", "-input=false", "-no-color", *variables, env=env)
    apply_seconds = time.monotonic() - start
    assert apply.returncode == 0, apply.stdout + apply.stderr
    calls = recorded(record)

    # The resources, as tofu keeps them and as EC2 holds them.
    state = work.run("state", "list").stdout.split()
    assert sorted(state) == expected_state()
    client = ec2(moto)
    vpcs = [v for v in client.describe_vpcs()["Vpcs"] if not v["IsDefault"]]
    assert [v["CidrBlock"] for v in vpcs] == ["10.0.0.0/24"]
    vpc = vpcs[0]["VpcId"]
    subnets = client.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    assert [(s["CidrBlock"], s["MapPublicIpOnLaunch"]) for s in subnets] == [("10.0.0.0/24", True)]
    assert [k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]] == ["rates"]
    hosts = instances(client)
    assert {name: i["PrivateIpAddress"] for name, i in hosts.items()} == CLUSTER
    assert {i["InstanceType"] for i in hosts.values()} == {"t3.small"}
    # The AMI: the newest x86_64 NixOS 25.11 image of the NixOS project's account.
    assert {name: i["ImageId"] for name, i in hosts.items()} == dict.fromkeys(CLUSTER, EXPECTED_AMI)
    public = {name: i["PublicIpAddress"] for name, i in hosts.items()}
    assert len(set(public.values())) == len(CLUSTER), public

    # The ports: from the world only lb's 80, SSH from the admin CIDR, and
    # between the roles only what they use.
    opened, role_of_group = opened_ports(client, vpc)
    assert opened == sorted(
        [f"22-22/tcp from {ADMIN} to {role}" for role in ROLES]
        + ["80-80/tcp from 0.0.0.0/0 to lb", "3000-3000/tcp from lb to api"]
        + ["5432-5432/tcp from api to db"]
    ), opened
    # In a VPC the groups belong to the instance's network interface.
    assert {
        name: [role_of_group[g["GroupId"]] for n in i["NetworkInterfaces"] for g in n["Groups"]]
        for name, i in hosts.items()
    } == {"db": ["db"], "api1": ["api"], "api2": ["api"], "lb": ["lb"]}

    # The hand-off: nix builds each host's system and disk layout, then
    # nixos-anywhere installs them at the host's public address, once each.
    builds = sorted(c["args"][-1] for c in calls if c["tool"] == "nix" and c["args"][0] == "build")
    assert builds == sorted(
        f"{work.root}#nixosConfigurations.aws-{host}.config.system.build.{attribute}"
        for host in CLUSTER
        for attribute in ("toplevel", "diskoScript")
    )
    assert [c for c in calls if c["tool"] != "nix"] == [], "ssh was called"
    installs = {c["nixos_anywhere"][-1]: c for c in calls if "nixos_anywhere" in c}
    assert sorted(installs) == sorted(f"root@{ip}" for ip in public.values())
    for name, ip in public.items():
        assert_installed(installs[f"root@{ip}"], name, ip, key, password, stored)

    # Access: ssh reaches each host by its private address, at its public one.
    output = json.loads(work.run("output", "-json").stdout)
    for name, address in CLUSTER.items():
        assert (
            f"Host {address}\n  HostName {public[name]}\n  User root\n"
            f"  HostKeyAlias rates-aws-{name}\n  StrictHostKeyChecking accept-new\n"
        ) in output["ssh_config"]["value"], output["ssh_config"]["value"]
    assert output["url"]["value"] == f"http://{public['lb']}:80"
    assert output["ami"]["value"] == {"id": EXPECTED_AMI, "name": EXPECTED_NAME}
    # The password is nowhere in the state.
    assert password not in (work.path / "terraform.tfstate").read_text()

    # Destroy, as docs/cloud.md says (without refreshing, so without building
    # anything): nothing is left in EC2 but its defaults.
    before = set(record.iterdir())
    start = time.monotonic()
    destroy = work.run(
        "destroy",
        "-refresh=false",
        "-auto-approve",
        "-input=false",
        "-no-color",
        *variables,
        env=env,
    )
    destroy_seconds = time.monotonic() - start
    assert destroy.returncode == 0, destroy.stdout + destroy.stderr
    assert sorted(set(record.iterdir()) - before) == [], "destroy ran nix or ssh"
    assert work.run("state", "list").stdout.split() == []
    assert instances(client) == {}
    assert [v for v in client.describe_vpcs()["Vpcs"] if not v["IsDefault"]] == []
    assert client.describe_key_pairs()["KeyPairs"] == []
    groups = client.describe_security_groups()["SecurityGroups"]
    assert {g["GroupName"] for g in groups} == {"default"}

    figures(
        "cloud/aws cluster against moto",
        apply_s=round(apply_seconds, 1),
        destroy_s=round(destroy_seconds, 1),
        resources=len([a for a in state if "data." not in a]),
        instances=len(hosts),
        ports_opened=len(opened),
        nix_builds=len(builds),
        installs=len(installs),
    )
