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
    error_message = "admin_cidrs must list at least one IPv4 CIDR, such as \"203.0.113.7/32\" (the servers have no IPv6)."
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

variable "name" {
  type        = string
  default     = "rates"
  description = "Names and labels the resources (rates-deployment); change it to run two deployments in one project."
}

variable "location" {
  type        = string
  default     = "nbg1"
  description = "The servers' location (fsn1, nbg1, hel1 in network_zone eu-central; ash: us-east; hil: us-west; sin: ap-southeast)."
}

variable "network_zone" {
  type        = string
  default     = "eu-central"
  description = "The private network's zone: the one of location."
}

variable "server_type" {
  type        = string
  default     = "cx23"
  description = "Every server's type: x86_64 (the disk is /dev/sda, nix/hosts/cloud/hetzner.nix), with at least 2 GB of memory for nixos-anywhere's installer."
}

variable "image" {
  type        = string
  default     = "debian-12"
  description = "The image the servers boot before nixos-anywhere replaces it (Hetzner has no NixOS image)."
}
