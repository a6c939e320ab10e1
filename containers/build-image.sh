#!/usr/bin/env bash
# The flake's image (nix/image.nix, `nix build .#image`) on a machine with
# Docker or Podman and no Nix. docker-compose.yaml's service build-image runs
# this in the official nixos/nix image, with the checkout at /src and the Nix
# store in the volume nix, which later builds reuse:
#
#   docker compose run --rm build-image   # writes rates-image.tar here
#   docker load -i rates-image.tar        # Loaded image: rates:0.1.0
#
# The archive is the very store path `nix build .#image` makes, unpacked from
# its gzip: the same layers, user, command and environment as on a machine with
# Nix, from the same flake.lock. Unpacked, because Podman's `load` (4.3, at
# least) does not read a gzipped docker-archive; a file rather than a pipe into
# `docker load`, because Windows PowerShell 5.1 corrupts binary data in a pipe.
set -Eeuo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly repo
readonly archive="$repo/rates-image.tar"
partial=""
trap '[[ -z "$partial" ]] || rm -f "$partial"' EXIT

log() { printf 'build-image: %s\n' "$*" >&2; }

# The checkout belongs to the host's user, not to this container's root (on
# Linux; Docker Desktop and rootless Podman show it as root's), and Nix, like
# git since 2.35.2, refuses a repository another user owns unless
# safe.directory names it (NixOS/nix#10202). The setting goes in this
# container's home, which goes with the container.
trust_checkout() {
  git config --global --add safe.directory "$repo"
}

# nixos/nix leaves flakes off, as Nix's installer does. Only the path goes to
# stdout; Nix's progress goes to stderr.
build() {
  log "nix build .#image in $repo (the first build downloads its dependencies into the volume nix)"
  nix --extra-experimental-features 'nix-command flakes' build --no-link --print-out-paths "$repo#image"
}

# Written under another name and renamed, so that an interruption leaves no
# half archive behind; owned like the checkout, so that its user can remove it.
write_archive() {
  local image=$1
  partial="$(mktemp "$archive.XXXXXX")"
  gzip --decompress --stdout "$image" >"$partial"
  chmod 644 "$partial"
  chown "$(stat -c %u:%g "$repo")" "$partial"
  mv -f "$partial" "$archive"
  partial=""
}

main() {
  local image
  # A failed build leaves no archive, rather than an older one that `docker
  # load` would take for this build's (Podman 4.3's `compose run --rm` reports
  # a failure as exit 0).
  rm -f "$archive"
  trust_checkout
  image="$(build)"
  log "built $image"
  write_archive "$image"
  log "wrote rates-image.tar; next: docker load -i rates-image.tar (or podman load -i)," \
    "then docker compose up -d --wait"
}

main "$@"
