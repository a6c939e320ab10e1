variable "name" {
  type        = string
  default     = "rates"
  description = "Names and tags the resources (Name, rates:deployment); change it to run two deployments in one account and region."
}

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "The AWS region."
}

variable "availability_zone" {
  type        = string
  default     = null
  description = "The subnet's availability zone; null: one AWS chooses."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Every host's instance type: x86_64 and Nitro (the disk is /dev/nvme0n1, nix/hosts/cloud/aws.nix), with at least 2 GiB of memory for nixos-anywhere's installer."
}

variable "disk_size" {
  type        = number
  default     = 20
  description = "Each host's disk, in GiB."
}

variable "nixos_release" {
  type        = string
  default     = "25.11"
  description = "The NixOS release of the AMI the hosts boot before nixos-anywhere replaces it: the flake's."
}
