# The hand-off to NixOS: builds each host's NixOS system and disk layout from
# this repository's flake, on the operator's machine, and installs them with
# nixos-anywhere (https://github.com/nix-community/nixos-anywhere), through its
# own OpenTofu modules at a pinned release. nixos-anywhere kexecs the running
# Linux into a NixOS installer, partitions the disk with disko and installs;
# the host reboots into the configuration the flake names.
#
# It installs once per machine (nixos-anywhere's `instance_id` trigger): a
# new release goes out with `nix run .#deploy`, the rolling upgrade of
# nix/deploy.sh, one host at a time, never from here. That is why this
# module does not use nixos-anywhere's all-in-one module, whose last step
# switches every host at once whenever the flake changes.

locals {
  # What each host's install gets, in one place (and an output, which the
  # tests read): the flake attributes nix builds, where nixos-anywhere
  # connects, and the password file it copies, if the host needs one.
  handoff = {
    for name, host in var.hosts : name => {
      system        = "${var.flake}#nixosConfigurations.${host.configuration}.config.system.build.toplevel"
      partitioner   = "${var.flake}#nixosConfigurations.${host.configuration}.config.system.build.diskoScript"
      target_host   = host.public_address
      instance_id   = host.instance_id
      password_file = host.secret && var.password_file != null ? abspath(var.password_file) : ""
    }
  }
}

# The three modules below come from one nixos-anywhere release (module
# sources cannot be variables): raise it in all three, with the release notes
# at hand (https://github.com/nix-community/nixos-anywhere/releases).
#
# Built by `nix build` on the operator's machine while tofu plans (an
# `external` data source): a configuration that does not build fails the plan
# before any machine exists.
module "system" {
  source   = "github.com/nix-community/nixos-anywhere//terraform/nix-build?ref=1.13.0"
  for_each = var.hosts

  attribute = local.handoff[each.key].system
}

module "partitioner" {
  source   = "github.com/nix-community/nixos-anywhere//terraform/nix-build?ref=1.13.0"
  for_each = var.hosts

  attribute = local.handoff[each.key].partitioner
}

module "install" {
  source   = "github.com/nix-community/nixos-anywhere//terraform/install?ref=1.13.0"
  for_each = var.hosts

  nixos_system      = module.system[each.key].result.out
  nixos_partitioner = module.partitioner[each.key].result.out
  target_host       = local.handoff[each.key].target_host
  # The images the root modules start from let root in with the key.
  target_user = "root"
  # Installs again only when the machine is replaced.
  instance_id = local.handoff[each.key].instance_id

  # No private key passes through tofu (its state would keep it):
  # nixos-anywhere makes a key of its own for the install and authorizes it
  # with the operator's ssh-agent or default key (ssh-copy-id).
  ssh_private_key = null

  # Files put on the host before NixOS is installed: root's authorized key,
  # and on the hosts that need it the database password, read from the
  # operator's file at that moment. See extra-files.sh.
  extra_files_script = "${path.module}/extra-files.sh"
  extra_environment = {
    RATES_AUTHORIZED_KEYS = var.authorized_keys
    RATES_PASSWORD_FILE   = local.handoff[each.key].password_file
  }
}
