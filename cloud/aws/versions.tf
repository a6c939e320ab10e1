terraform {
  # OpenTofu: `tofu test`'s mock providers and override_module (1.8).
  required_version = ">= 1.8"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.31"
    }
    # nixos-anywhere's modules (../modules/install) use these two.
    null = {
      source  = "hashicorp/null"
      version = "~> 3.2"
    }
    external = {
      source  = "hashicorp/external"
      version = "~> 2.3"
    }
  }
}
