variable "flake" {
  type        = string
  description = "The flake whose nixosConfigurations the hosts run: this repository's root, as an absolute path."
}

variable "hosts" {
  type = map(object({
    configuration  = string           # its nixosConfigurations name, e.g. aws-db
    address        = optional(string) # its private address from network.json; null: none planned
    public_address = string           # where the operator's machine reaches it
    instance_id    = string           # the machine: a new one is installed again
    secret         = bool             # whether it needs the database password
  }))
  description = "The machines to install, by host name."
}

variable "authorized_keys" {
  type        = string
  description = "The SSH public key(s), one per line, that may log in as root on the installed hosts."
}

variable "password_file" {
  type        = string
  default     = null
  description = "A file on the operator's machine holding the database password, for the hosts that need it. Read by the install step only: its content is never a tofu value, so never in the state."
}
