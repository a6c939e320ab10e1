# `tofu test` with mock providers: no AWS account, no network, no Nix.
# The plan of each layout: the instances and the AMI they boot, their
# addresses from nix/hosts/cluster/network.json, the security groups, and
# what each host's install gets. `external` is mocked, so nothing is built; a
# plan runs no provisioner, so nothing is installed. tests/cloud runs this
# and an apply against moto (docs/testing.md).

mock_provider "aws" {
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0", name = "nixos/25.11.20251130.0123abc-x86_64-linux" }
  }
  mock_resource "aws_instance" {
    defaults = { id = "i-0123456789abcdef0", public_ip = "192.0.2.10" }
  }
}

mock_provider "external" {
  mock_data "external" {
    defaults = { result = { out = "/nix/store/00000000000000000000000000000000-mock" } }
  }
}

mock_provider "null" {}

variables {
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockMockMockMockMockMockMockMockMockMockMo test"
  admin_cidrs    = ["198.51.100.0/24", "203.0.113.7/32"]
  # Any readable file: the plan checks that it exists, never reads it.
  password_file = "tests/layouts.tftest.hcl" # pragma: allowlist secret (a path)
}

run "cluster" {
  command = plan

  assert {
    condition     = { for name, i in aws_instance.host : name => i.private_ip } == { api1 = "10.0.0.17", api2 = "10.0.0.18", db = "10.0.0.10", lb = "10.0.0.5" }
    error_message = "The cluster is db, api1, api2 and lb, at network.json's addresses."
  }

  assert {
    condition     = aws_vpc.main.cidr_block == "10.0.0.0/24" && aws_subnet.main.cidr_block == "10.0.0.0/24" && aws_subnet.main.map_public_ip_on_launch
    error_message = "One public subnet, network.json's."
  }

  assert {
    condition = (
      toset(data.aws_ami.nixos.owners) == toset(["427812963091"]) && data.aws_ami.nixos.most_recent
      && jsonencode({ for f in data.aws_ami.nixos.filter : f.name => f.values }) == jsonencode({ architecture = ["x86_64"], name = ["nixos/25.11.*"] })
      && alltrue([for i in aws_instance.host : i.ami == "ami-0123456789abcdef0"])
    )
    error_message = "Every host boots the newest NixOS 25.11 AMI of the NixOS project's account."
  }

  assert {
    condition = alltrue([for i in aws_instance.host : (
      i.instance_type == "t3.small" && one(i.metadata_options).http_tokens == "required"
      && one(i.root_block_device).encrypted && one(i.root_block_device).volume_size == 20
    )])
    error_message = "t3.small, IMDSv2 only, an encrypted 20 GiB disk."
  }

  assert {
    condition = jsonencode(sort([for r in aws_vpc_security_group_ingress_rule.role : "${r.description} ${r.ip_protocol} ${coalesce(r.cidr_ipv4, "group")}"])) == jsonencode([
      "admin to api:22 tcp 198.51.100.0/24",
      "admin to api:22 tcp 203.0.113.7/32",
      "admin to db:22 tcp 198.51.100.0/24",
      "admin to db:22 tcp 203.0.113.7/32",
      "admin to lb:22 tcp 198.51.100.0/24",
      "admin to lb:22 tcp 203.0.113.7/32",
      "api to db:5432 tcp group",
      "lb to api:3000 tcp group",
      "world to lb:80 tcp 0.0.0.0/0",
    ])
    error_message = "Only lb's port 80 is open to the world, SSH to admin_cidrs, and between roles only what they use: ${jsonencode([for r in aws_vpc_security_group_ingress_rule.role : r.description])}"
  }

  assert {
    condition = { for name, h in module.install.handoff : name => [h.system, h.partitioner, h.target_host, h.password_file != ""] } == {
      for name in ["api1", "api2", "db", "lb"] : name => [
        "${abspath("${path.module}/../..")}#nixosConfigurations.aws-${name}.config.system.build.toplevel",
        "${abspath("${path.module}/../..")}#nixosConfigurations.aws-${name}.config.system.build.diskoScript",
        "192.0.2.10",
        name != "lb",
      ]
    }
    error_message = "Each host installs aws-NAME at its public address; db and the API hosts get the password: ${jsonencode(module.install.handoff)}"
  }

  assert {
    condition     = output.url == "http://192.0.2.10:80" && output.deploy == "RATES_DEPLOY_PREFIX=aws- nix run .#deploy"
    error_message = "The service is at lb's port 80, later releases go out with nix run .#deploy."
  }
}

run "single" {
  command = plan

  variables {
    layout        = "single"
    password_file = null
  }

  assert {
    condition     = keys(aws_instance.host) == ["single"] && module.layout.hosts["single"].address == null
    error_message = "single is one instance, at an address AWS chooses."
  }

  assert {
    condition = jsonencode(sort([for r in aws_vpc_security_group_ingress_rule.role : "${r.description} ${r.cidr_ipv4}"])) == jsonencode([
      "admin to single:22 198.51.100.0/24",
      "admin to single:22 203.0.113.7/32",
      "world to single:3000 0.0.0.0/0",
    ])
    error_message = "Only the API port is open to the world, SSH to admin_cidrs."
  }

  assert {
    condition     = module.install.handoff["single"].password_file == "" && endswith(module.install.handoff["single"].system, "#nixosConfigurations.aws-single.config.system.build.toplevel")
    error_message = "single installs aws-single, with no password."
  }

  assert {
    condition     = strcontains(output.ssh_config, "Host rates-aws-single\n  HostName 192.0.2.10\n")
    error_message = "ssh reaches the single host as rates-aws-single: ${output.ssh_config}"
  }
}

run "cluster_without_a_password_file" {
  command = plan

  variables {
    password_file = null
  }

  expect_failures = [var.password_file]
}

run "an_ipv6_admin_cidr" {
  command = plan

  variables {
    admin_cidrs = ["2001:db8::/64"]
  }

  expect_failures = [var.admin_cidrs]
}

run "a_layout_that_does_not_exist" {
  command = plan

  variables {
    layout = "three"
  }

  expect_failures = [var.layout]
}
