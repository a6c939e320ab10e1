#!/usr/bin/env bash
# rates-dev, `nix run .#dev`: the local stack of the checkout you are in, as
# `process-compose up` in its root runs it, with the flake's tools on PATH
# (nix/dev.nix). The stack is the checkout's own files (process-compose.yaml,
# stack/, .pc_env, .env), read just as a bare `process-compose up` reads
# them, so there is one stack however it is started. Arguments go to
# `process-compose up`, e.g. `nix run .#dev -- --tui=false`.
set -Eeuo pipefail

# A relative RATES_DUMP names a file from where you are.
if [[ -n "${RATES_DUMP:-}" && "$RATES_DUMP" != /* ]]; then
  export RATES_DUMP="$PWD/$RATES_DUMP"
fi
root="$PWD"
until [[ -f "$root/process-compose.yaml" && -x "$root/stack/about" ]]; do
  if [[ "$root" == / ]]; then
    echo "rates-dev: no checkout of rates in $PWD or above it; run it in one" >&2
    exit 2
  fi
  root="$(dirname "$root")"
done
cd "$root"
exec process-compose up "$@"
