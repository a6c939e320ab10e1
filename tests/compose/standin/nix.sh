#!/usr/bin/env bash
# Stand-in for nix in the stand-in nixos/nix image (testlib/containers.py).
# It answers only the command containers/build-image.sh runs, `nix build` of
# the checkout's image with flakes enabled, and answers it with the path of an
# archive of the stand-in rates image, placed in /nix/store beforehand. First
# it opens the checkout's repository as Nix does, and fails as Nix fails where
# git's safe.directory does not name a checkout another user owns. Nothing is
# evaluated or built.
set -Eeuo pipefail

expected=(--extra-experimental-features "nix-command flakes" build --no-link --print-out-paths)
if (($# != ${#expected[@]} + 1)) || [[ "${*:1:${#expected[@]}}" != "${expected[*]}" ]] ||
  [[ "${!#}" != /*'#image' ]]; then
  echo "stand-in nix: expected: nix ${expected[*]} /CHECKOUT#image; got: nix $*" >&2
  exit 2
fi
flake="${!#}"
flake="${flake%#image}"

git -C "$flake" rev-parse --show-toplevel >/dev/null
echo "stand-in nix: building '$flake#image' (a prebuilt archive of the stand-in rates image)" >&2
shopt -s nullglob
archives=(/nix/store/*-docker-image-rates.tar.gz)
if ((${#archives[@]} != 1)); then
  echo "stand-in nix: expected one archive in /nix/store, found ${#archives[@]}" >&2
  exit 1
fi
printf '%s\n' "${archives[0]}"
