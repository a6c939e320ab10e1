# The variables every root module takes (cloud/aws, cloud/hetzner), declared
# once: each root module links this file in as common-variables.tf. Its own
# variables.tf holds what only its cloud has.

variable "layout" {
  type        = string
  default     = "cluster"
  description = "single: one host runs everything. cluster: db, api1, api2 and the load balancer lb (nix/hosts/cluster.nix)."

  validation {
    condition     = contains(["single", "cluster"], var.layout)
    error_message = "layout must be \"single\" or \"cluster\"."
  }
}

variable "ssh_public_key" {
  type        = string
  description = "Your SSH public key (the contents of e.g. ~/.ssh/id_ed25519.pub): root's only login on every host."
}

variable "admin_cidrs" {
  type        = list(string)
  description = "The IPv4 CIDRs that may reach the hosts over SSH, e.g. [\"203.0.113.7/32\"] for your own address. Nothing else reaches SSH."

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for cidr in var.admin_cidrs : can(cidrnetmask(cidr))])
    error_message = "admin_cidrs must list at least one IPv4 CIDR, such as \"203.0.113.7/32\" (the hosts have no IPv6 address)."
  }
}

variable "password_file" {
  type        = string
  default     = null
  description = "cluster: a file holding the database password (one line), e.g. made with `umask 077; openssl rand -hex 24 > rates-db-password`. Only its path is a tofu value; the install step copies its content to db, api1 and api2."

  validation {
    condition     = var.layout == "single" || (var.password_file == null ? false : fileexists(var.password_file))
    error_message = "The cluster's db, api1 and api2 need the database password: set password_file to a file that holds it (one line), e.g. made with `umask 077; openssl rand -hex 24 > rates-db-password`."
  }
}
