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
