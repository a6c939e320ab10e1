# `tofu test` with mock providers: no Hetzner account, no network, no Nix.
# The plan of each layout: the servers, their addresses from
# nix/hosts/cluster/network.json, the firewall, and what each host's install
# gets. `external` is mocked, so nothing is built; a plan runs no provisioner,
# so nothing is installed. tests/cloud runs this (docs/testing.md).

mock_provider "hcloud" {
  # Hetzner's ids are numbers (a server's network_id must be one).
  mock_resource "hcloud_network" {
    defaults = { id = "101" }
  }
  mock_resource "hcloud_firewall" {
    defaults = { id = "102" }
  }
  mock_resource "hcloud_ssh_key" {
    defaults = { id = "103" }
  }
  mock_resource "hcloud_server" {
    defaults = { id = "104", ipv4_address = "192.0.2.10" }
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
    condition     = keys(hcloud_server.host) == ["api1", "api2", "db", "lb"]
    error_message = "The cluster is db, api1, api2 and lb: ${jsonencode(keys(hcloud_server.host))}"
  }

  assert {
    condition = { for name, server in hcloud_server.host : name => [for n in server.network : n.ip] } == {
      api1 = ["10.0.0.17"], api2 = ["10.0.0.18"], db = ["10.0.0.10"], lb = ["10.0.0.5"]
    }
    error_message = "Each server's private address is network.json's."
  }

  assert {
    condition     = hcloud_network.main[0].ip_range == "10.0.0.0/24" && hcloud_network_subnet.main[0].ip_range == "10.0.0.0/24"
    error_message = "The private network is network.json's subnet."
  }

  assert {
    condition = jsonencode({ for role, firewall in hcloud_firewall.role : role => sort([for r in firewall.rule : "${r.direction} ${r.protocol} ${r.port} ${join(",", r.source_ips)}"]) }) == jsonencode({
      api = ["in tcp 22 198.51.100.0/24,203.0.113.7/32"]
      db  = ["in tcp 22 198.51.100.0/24,203.0.113.7/32"]
      lb  = ["in tcp 22 198.51.100.0/24,203.0.113.7/32", "in tcp 80 0.0.0.0/0"]
    })
    error_message = "Only lb's port 80 is open to the world, SSH to admin_cidrs: ${jsonencode({ for role, f in hcloud_firewall.role : role => f.rule })}"
  }

  assert {
    condition = { for name, server in hcloud_server.host : name => server.firewall_ids } == {
      api1 = toset([102]), api2 = toset([102]), db = toset([102]), lb = toset([102])
    }
    error_message = "Every server is behind its role's firewall."
  }

  assert {
    condition = { for name, h in module.install.handoff : name => [h.system, h.partitioner, h.password_file != ""] } == {
      for name in ["api1", "api2", "db", "lb"] : name => [
        "${abspath("${path.module}/../..")}#nixosConfigurations.hetzner-${name}.config.system.build.toplevel",
        "${abspath("${path.module}/../..")}#nixosConfigurations.hetzner-${name}.config.system.build.diskoScript",
        name != "lb",
      ]
    }
    error_message = "Each host installs hetzner-NAME; db and the API hosts get the password: ${jsonencode(module.install.handoff)}"
  }

  # Every mock server has the same public address; the moto test
  # (tests/cloud) sees distinct ones.
  assert {
    condition = alltrue([for name, address in { db = "10.0.0.10", api1 = "10.0.0.17", api2 = "10.0.0.18", lb = "10.0.0.5" } :
      strcontains(output.ssh_config, "Host ${address}\n  HostName 192.0.2.10\n  User root\n  HostKeyAlias rates-hetzner-${name}\n  StrictHostKeyChecking accept-new\n")
    ])
    error_message = "ssh reaches each host by its private address at its public one: ${output.ssh_config}"
  }
}

run "cluster_without_a_password_file" {
  command = plan

  variables {
    password_file = null
  }

  expect_failures = [var.password_file]
}

run "single" {
  command = plan

  variables {
    layout        = "single"
    password_file = null
  }

  assert {
    condition     = keys(hcloud_server.host) == ["single"] && length(hcloud_server.host["single"].network) == 0 && length(hcloud_network.main) == 0
    error_message = "single is one server, with no private network."
  }

  assert {
    condition = jsonencode({ for role, firewall in hcloud_firewall.role : role => sort([for r in firewall.rule : "${r.port} ${join(",", r.source_ips)}"]) }) == jsonencode({
      single = ["22 198.51.100.0/24,203.0.113.7/32", "3000 0.0.0.0/0"]
    })
    error_message = "Only the API port is open to the world, SSH to admin_cidrs."
  }

  assert {
    condition     = module.install.handoff["single"].password_file == "" && endswith(module.install.handoff["single"].system, "#nixosConfigurations.hetzner-single.config.system.build.toplevel")
    error_message = "single installs hetzner-single, with no password."
  }

  assert {
    condition     = strcontains(output.ssh_config, "Host rates-hetzner-single\n  HostName 192.0.2.10\n")
    error_message = "ssh reaches the single host as rates-hetzner-single: ${output.ssh_config}"
  }
}

run "a_layout_that_does_not_exist" {
  command = plan

  variables {
    layout = "three"
  }

  expect_failures = [var.layout]
}

run "an_ipv6_admin_cidr" {
  command = plan

  variables {
    admin_cidrs = ["2001:db8::/64"]
  }

  expect_failures = [var.admin_cidrs]
}
