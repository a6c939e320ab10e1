# The rates hosts on Hetzner Cloud: a private network, a firewall per role,
# the operator's key, one server per host, and the hand-off to the flake's
# NixOS configurations (../modules/install). Hetzner has no NixOS image: the
# servers boot Debian, which nixos-anywhere replaces. docs/cloud.md says how
# to use it.

# The API token comes from HCLOUD_TOKEN, never from a tofu variable.
provider "hcloud" {}

module "layout" {
  source = "../modules/layout"
  layout = var.layout
}

locals {
  hosts = module.layout.hosts
  # The private network only for hosts with a planned address: single has none.
  private = length(module.layout.addresses) > 0
}

# --- The private network. Hetzner routes it (layer 3) through its gateway,
# the first address: the hosts take their address and that route by DHCP on
# their private interface, so no host configures a static one
# (https://docs.hetzner.com/networking/networks/technical-concepts/architecture).

resource "hcloud_network" "main" {
  count = local.private ? 1 : 0

  name     = var.name
  ip_range = module.layout.cidr
  labels   = local.labels
}

resource "hcloud_network_subnet" "main" {
  count = local.private ? 1 : 0

  network_id   = hcloud_network.main[0].id
  type         = "cloud"
  network_zone = var.network_zone
  ip_range     = module.layout.cidr
}

# --- The firewall: one per role, admitting from the internet exactly the
# layout's world and admin rules (../modules/layout): the service port from
# anywhere, SSH from admin_cidrs. Hetzner's firewalls filter the public
# interfaces only; on the private network the hosts' own firewall
# (networking.firewall) and pg_hba.conf decide, as on any machine.

resource "hcloud_firewall" "role" {
  for_each = module.layout.roles

  name   = "${var.name}-${each.key}"
  labels = local.labels

  dynamic "rule" {
    for_each = [for rule in module.layout.ingress : rule if rule.role == each.key && contains(["world", "admin"], rule.from)]
    content {
      description = "${rule.value.from} to ${each.key}:${rule.value.port}"
      direction   = "in"
      protocol    = "tcp"
      port        = tostring(rule.value.port)
      source_ips  = rule.value.from == "world" ? ["0.0.0.0/0"] : var.admin_cidrs
    }
  }
}

# --- The machines.

resource "hcloud_ssh_key" "operator" {
  name       = var.name
  public_key = var.ssh_public_key
  labels     = local.labels
}

resource "hcloud_server" "host" {
  for_each = local.hosts

  name         = "${var.name}-${each.key}"
  image        = var.image
  server_type  = var.server_type
  location     = var.location
  ssh_keys     = [hcloud_ssh_key.operator.id]
  firewall_ids = [hcloud_firewall.role[each.value.role].id]
  labels       = merge(local.labels, { role = each.value.role })

  # A public IPv4 address each: the operator reaches the host over SSH, and
  # the host fetches nixos-anywhere's installer and Nix's binary cache.
  # No IPv6: Hetzner hands it out by cloud-init only, which the hosts do not
  # run (https://docs.hetzner.com/cloud/servers/primary-ips/primary-ip-configuration).
  public_net {
    ipv4_enabled = true
    ipv6_enabled = false
  }

  dynamic "network" {
    for_each = each.value.address == null ? [] : [each.value.address]
    content {
      network_id = hcloud_network.main[0].id
      ip         = network.value
    }
  }

  # The key and the image serve the first boot only: changing either later
  # must not replace a server (and its database). nixos-anywhere installs
  # root's key for good (../modules/install/extra-files.sh).
  lifecycle {
    ignore_changes = [ssh_keys, image]
  }

  # Hetzner attaches a server to a network only once its subnet exists.
  depends_on = [hcloud_network_subnet.main]
}

module "install" {
  source = "../modules/install"

  flake = abspath("${path.module}/../..")
  hosts = {
    for name, host in local.hosts : name => {
      configuration  = "hetzner-${name}"
      address        = host.address
      public_address = hcloud_server.host[name].ipv4_address
      instance_id    = hcloud_server.host[name].id
      secret         = host.secret
    }
  }
  authorized_keys = var.ssh_public_key
  password_file   = var.password_file
}

locals {
  labels = { "rates-deployment" = var.name }
}
