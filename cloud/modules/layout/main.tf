# The hosts of a layout, their private addresses, and who may open a
# connection to which of their ports: the same for every cloud, so that the
# root modules (cloud/aws, cloud/hetzner) only say how their cloud does it.
#
# The addresses come from the address plan, nix/hosts/cluster/network.json,
# read here and never copied: nix/hosts/cluster.nix configures the hosts from
# it, nix/deploy.sh reaches them by it, and the cluster tests run it.

variable "layout" {
  type        = string
  description = "single: one host runs everything (nix/hosts/single.nix). cluster: db, api1, api2 and lb (nix/hosts/cluster.nix). The root modules validate it."
}

locals {
  network = jsondecode(file("${path.module}/../../../nix/hosts/cluster/network.json"))
  ports   = local.network.ports

  # The private network: the subnet of the database host's address. Every
  # address in the plan must lie in it, at least 4 above its start and below
  # its broadcast address, because AWS keeps those for itself
  # (https://docs.aws.amazon.com/vpc/latest/userguide/subnet-sizing.html);
  # Hetzner keeps only the first, its gateway.
  cidr = cidrsubnet("${local.network.db}/${local.network.prefixLength}", 0, 0)

  # Each host: its role (which NixOS configuration it runs), its private
  # address (null: any the cloud gives it), and whether it needs the database
  # password (network.json's passwordFile).
  hosts = var.layout == "single" ? tomap({
    single = { role = "single", address = null, secret = false }
    }) : merge(
    tomap({
      db = { role = "db", address = local.network.db, secret = true }
      lb = { role = "lb", address = local.network.lb, secret = false }
    }),
    { for name, address in local.network.api : name => { role = "api", address = address, secret = true } },
  )

  addresses = [for host in local.hosts : host.address if host.address != null]

  roles = toset([for host in local.hosts : host.role])

  # Who may open a connection to which port of which role's hosts: "world"
  # (anyone), "admin" (the operator's CIDRs) or the hosts of another role.
  # Nothing else is admitted. The service port is the only one open to the
  # world; SSH (nixos-anywhere, nix run .#deploy) is open to the operator.
  ingress = concat(
    var.layout == "single" ? [
      # nix/hosts/single.nix serves the API itself, on the API port.
      { role = "single", port = local.ports.api, from = "world" },
      ] : [
      { role = "lb", port = local.ports.lb, from = "world" },
      # HAProxy's requests and health checks.
      { role = "api", port = local.ports.api, from = "lb" },
      # pg_hba.conf admits the API subnet only, with a password.
      { role = "db", port = local.ports.db, from = "api" },
    ],
    [for role in local.roles : { role = role, port = 22, from = "admin" }],
  )

  # Where users reach the service.
  entry = var.layout == "single" ? { host = "single", port = local.ports.api } : { host = "lb", port = local.ports.lb }
}

output "hosts" {
  description = "name => { role, address (null: any), secret (needs the database password) }"
  value       = local.hosts

  precondition {
    condition = alltrue([
      for address in local.addresses : cidrsubnet("${address}/${local.network.prefixLength}", 0, 0) == local.cidr
      && !contains([for i in [0, 1, 2, 3, -1] : cidrhost(local.cidr, i)], address)
    ])
    error_message = "Every address in nix/hosts/cluster/network.json must lie in ${local.cidr}, and be neither one of its first four addresses nor its last: AWS reserves those."
  }
}

output "cidr" {
  description = "The private network, e.g. 10.0.0.0/24."
  value       = local.cidr
}

output "roles" {
  description = "The roles of the layout's hosts."
  value       = local.roles
}

output "ingress" {
  description = "[{ role, port, from }]: from is \"world\", \"admin\" or a role. Nothing else is admitted."
  value       = local.ingress
}

output "entry" {
  description = "{ host, port }: where users reach the service."
  value       = local.entry
}

output "password_file" {
  description = "Where the hosts read the database password (network.json's passwordFile)."
  value       = local.network.passwordFile
}

output "addresses" {
  description = "The planned private addresses (none for single)."
  value       = local.addresses
}
