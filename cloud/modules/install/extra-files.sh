#!/usr/bin/env bash
# nixos-anywhere's extra_files_script (cloud/modules/install/main.tf): it runs
# on the operator's machine in an empty directory, whose tree nixos-anywhere
# copies onto the new root file system before it installs NixOS there.
#
#   RATES_AUTHORIZED_KEYS  the SSH public key(s) that may log in as root
#   RATES_PASSWORD_FILE    the database password's file on this machine, or
#                          empty for a host that does not need it
#
# root's key goes to /root/.ssh/authorized_keys, which NixOS leaves to the
# host (it manages /etc/ssh/authorized_keys.d instead), so later deploys of
# the flake keep it. The password goes to /var/lib/secrets, which survives
# reboots; the hosts' configuration links network.json's passwordFile (under
# /run, emptied at every boot) to it: nix/hosts/cloud.nix.
set -Eeuo pipefail
umask 077

install -d -m 0700 root root/.ssh
printf '%s\n' "$RATES_AUTHORIZED_KEYS" >root/.ssh/authorized_keys

if [[ -n ${RATES_PASSWORD_FILE:-} ]]; then
  if [[ ! -s $RATES_PASSWORD_FILE ]]; then
    echo "extra-files.sh: the database password file $RATES_PASSWORD_FILE is missing or empty" >&2
    exit 1
  fi
  install -d -m 0755 var var/lib
  install -d -m 0700 var/lib/secrets
  install -m 0400 "$RATES_PASSWORD_FILE" var/lib/secrets/rates-db-password
fi
