#!/usr/bin/env bash
# rates-deploy: deploys the cluster of nix/hosts/cluster.nix, one host at a
# time, without losing a request. `nix run .#deploy` runs it (nix/deploy.nix);
# docs/deploy.md ("Rolling deployment") explains it; tests/cluster drive it.
#
#   rates-deploy           a rolling upgrade of a running cluster
#   rates-deploy --first   the first deployment: no load balancer runs yet
#
# Order: the database host first (schema and data changes land before any API
# host needs them), then one API host at a time, the load balancer last. Each
# API host is drained from HAProxy (runtime API, `state drain`) and its
# requests in flight finish before it is switched; it must then answer
# /readyz, and HAProxy's own checks must see it UP again, before the next one
# is touched. So one API host serves at every moment. The API hosts that are
# out of rotation when the run starts (DOWN, in maintenance, drained) serve
# nothing: they go first, whichever they are, so that each host in rotation is
# then drained only while every other one is UP. The first failure stops the
# run, with what to do next.
#
# Nothing is switched until every host is reachable, the database password
# file is on the database host and on every API host, and (in a rolling
# upgrade) HAProxy answers and knows every API host.
#
# The hosts come from the address plan, nix/hosts/cluster/network.json. Two
# things can be replaced, and the tests replace them:
#   RATES_DEPLOY_ON      runs a command on a host: called as `ON NAME COMMAND...`.
#                        Default: ssh root@ADDRESS.
#   RATES_DEPLOY_SWITCH  switches one host to the new configuration: called as
#                        `SWITCH NAME ADDRESS`. Default: nixos-rebuild switch
#                        --flake "$RATES_DEPLOY_FLAKE#${RATES_DEPLOY_PREFIX}NAME" --target-host root@ADDRESS.
# Further settings:
#   RATES_DEPLOY_NETWORK  the address plan (default: beside this script)
#   RATES_DEPLOY_FLAKE    the flake to deploy (default: .)
#   RATES_DEPLOY_PREFIX   put before each host's name to name its nixosConfiguration
#                         (default: none; aws- or hetzner- for the hosts cloud/ makes)
#   RATES_DEPLOY_TIMEOUT  seconds to wait for each host to become ready (default: 120)
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly network="${RATES_DEPLOY_NETWORK:-$here/hosts/cluster/network.json}"
readonly flake="${RATES_DEPLOY_FLAKE:-.}"
readonly prefix="${RATES_DEPLOY_PREFIX:-}"
readonly timeout="${RATES_DEPLOY_TIMEOUT:-120}"
first=false

log() { printf 'rates-deploy: %s\n' "$*" >&2; }

die() {
  log "error: $1"
  shift
  local line
  for line in "$@"; do
    printf '  %s\n' "$line" >&2
  done
  exit 1
}

usage() {
  sed -n '2,/^set -Eeuo/{/^set -Eeuo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# --- the address plan ---

plan() { jq -er "$1" "$network"; }

address() { # address NAME
  case $1 in
    db | lb) plan ".$1" ;;
    *) plan ".api[\"$1\"]" ;;
  esac
}

# --- reaching the hosts ---

on() { # on NAME COMMAND...: run COMMAND on host NAME
  local name=$1
  shift
  if [[ -n ${RATES_DEPLOY_ON:-} ]]; then
    "$RATES_DEPLOY_ON" "$name" "$@"
  else
    # ssh hands the remote shell one string: quote each word for it.
    ssh -o BatchMode=yes "root@$(address "$name")" -- "$(printf '%q ' "$@")"
  fi
}

switch() { # switch NAME
  local name=$1 addr
  addr="$(address "$name")"
  log "$name ($addr): switching"
  if [[ -n ${RATES_DEPLOY_SWITCH:-} ]]; then
    "$RATES_DEPLOY_SWITCH" "$name" "$addr"
  else
    nixos-rebuild switch --flake "$flake#$prefix$name" --target-host "root@$addr"
  fi
}

# --- HAProxy's runtime API, on the load balancer ---

haproxy() { # haproxy COMMAND: one runtime API command; prints the answer
  printf '%s\n' "$1" | on lb socat - "UNIX-CONNECT:$admin_socket"
}

# server_field NAME COLUMN: one column of `show stat` for an API host's server
# (5: scur, the sessions in flight; 18: status: UP, DOWN, DRAIN, MAINT, "UP 1/2", ...).
server_field() {
  haproxy "show stat" | awk -F, -v b="$backend" -v s="$1" -v c="$2" '$1 == b && $2 == s { print $c; found = 1 } END { exit !found }'
}

# wait_for WHAT COMMAND...: run COMMAND every second until it succeeds, at most $timeout s.
wait_for() {
  local what=$1 start=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start >= timeout)); then
      return 1
    fi
    sleep 1
  done
  log "$what after $((SECONDS - start)) s"
}

is_up() { [[ "$(server_field "$1" 18)" == UP ]]; }
is_out_of_rotation() { # is_out_of_rotation NAME: as found by the preflight
  local name
  for name in "${out_of_rotation[@]}"; do
    [[ $name == "$1" ]] && return 0
  done
  return 1
}
is_idle() { [[ "$(server_field "$1" 5)" == 0 ]]; }
is_ready() { on "$1" curl --fail --silent --max-time 5 --output /dev/null "http://127.0.0.1:$api_port/readyz"; }
lb_serves() { on lb curl --fail --silent --max-time 5 --output /dev/null "http://127.0.0.1:$lb_port/readyz"; }

build_of() { # build_of NAME: the release the API host runs (/healthz's Rates-Build header)
  on "$1" curl --fail --silent --max-time 5 --dump-header - --output /dev/null "http://127.0.0.1:$api_port/healthz" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "rates-build" { print $2 }'
}

# --- checks before anything is switched ---

preflight() {
  local name missing=()
  [[ -r $network ]] || die "cannot read the address plan $network" \
    "Set RATES_DEPLOY_NETWORK to nix/hosts/cluster/network.json of your checkout."
  if [[ -z ${RATES_DEPLOY_SWITCH:-} ]] && ! command -v nixos-rebuild >/dev/null; then
    die "nixos-rebuild is not on PATH; nothing was changed" \
      "On NixOS it is installed; elsewhere: nix shell nixpkgs#nixos-rebuild-ng, then run this again."
  fi
  for name in db "${apis[@]}" lb; do
    on "$name" true || die "cannot run a command on $name ($(address "$name")); nothing was changed" \
      "Check that \`ssh root@$(address "$name") true\` works (host up, key authorized)."
  done
  for name in db "${apis[@]}"; do
    on "$name" test -s "$password_file" || missing+=("$name")
  done
  if ((${#missing[@]})); then
    die "the database password file $password_file is missing or empty on: ${missing[*]}; nothing was changed" \
      "Provision it on each of these hosts first (docs/deploy.md, \"Secrets\"), then run this again:" \
      "without it PostgreSQL on db has no password for the API hosts, and they cannot log in."
  fi
  $first && return 0
  local stat
  stat="$(haproxy "show stat")" || die "HAProxy on lb does not answer on $admin_socket; nothing was changed" \
    "Is this the first deployment? Then run: rates-deploy --first"
  local status in_rotation=()
  out_of_rotation=()
  for name in "${apis[@]}"; do
    status="$(awk -F, -v b="$backend" -v s="$name" '$1 == b && $2 == s { print $18 }' <<<"$stat")"
    [[ -n $status ]] ||
      die "HAProxy on lb has no server $name in backend $backend; nothing was changed" \
        "Deploy the load balancer's configuration for the current address plan first."
    # UP, or "UP 1/3" (a failed check, still in rotation); anything else serves nothing.
    if [[ $status == UP* ]]; then
      in_rotation+=("$name")
    else
      out_of_rotation+=("$name")
      log "$name is out of rotation ($status): it serves nothing, so it is switched first"
    fi
  done
  order=("${out_of_rotation[@]}" "${in_rotation[@]}")
  log "preflight: ${#apis[@]} API hosts, the password file on db and on each, HAProxy answers"
}

# --- the steps ---

deploy_db() {
  # The API hosts that answer /readyz now must answer it with db switched.
  local name ready=()
  for name in "${apis[@]}"; do
    is_ready "$name" && ready+=("$name")
  done
  switch db || die "switching db failed; the API hosts still run the old release" \
    "Look at the output above, fix the configuration, and run this again."
  for name in "${ready[@]}"; do
    wait_for "$name answers /readyz with db switched" is_ready "$name" ||
      die "$name does not answer /readyz since db was switched" \
        "The database host is the likely cause: ssh root@$(plan .db) journalctl -u postgresql -u rates-seed -e" \
        "Roll it back with: nixos-rebuild switch --rollback --target-host root@$(plan .db)"
  done
}

deploy_api() { # deploy_api NAME
  local name=$1 other addr
  addr="$(address "$name")"
  local recover=(
    "Look at: ssh root@$addr journalctl -u rates -e"
    "Fix the cause and run this again, or roll back: nixos-rebuild switch --rollback --target-host root@$addr"
  )
  if ! $first; then
    # A host in rotation leaves it only while every other one is UP; one out of
    # rotation is drained too, so that it gets no request while it is switched.
    if ! is_out_of_rotation "$name"; then
      for other in "${apis[@]}"; do
        [[ $other == "$name" ]] && continue
        wait_for "$other is UP in HAProxy, so $name may leave rotation" is_up "$other" ||
          die "$other is not UP in HAProxy ($(server_field "$other" 18 || true)); $name was not touched" \
            "Draining $name now would leave no API host in rotation. Bring $other back first."
      done
    fi
    haproxy "set server $backend/$name state drain" >/dev/null
    recover+=("then put it back into rotation: echo 'set server $backend/$name state ready' | ssh root@$(plan .lb) socat - UNIX-CONNECT:$admin_socket")
    wait_for "$name: drained, no request in flight" is_idle "$name" ||
      die "$name still has requests in flight after ${timeout} s; it is drained (out of rotation), not switched" "${recover[@]}"
  fi
  switch "$name" || die "switching $name failed; the other API hosts serve" "${recover[@]}"
  wait_for "$name answers /readyz" is_ready "$name" ||
    die "$name does not answer /readyz after ${timeout} s; the other API hosts serve" "${recover[@]}"
  log "$name runs $(build_of "$name")"
  if ! $first; then
    haproxy "set server $backend/$name state ready" >/dev/null
    wait_for "$name: UP in HAProxy" is_up "$name" ||
      die "HAProxy does not see $name UP after ${timeout} s ($(server_field "$name" 18 || true))" \
        "HAProxy checks GET /readyz from lb: is port $api_port open to it? ssh root@$(plan .lb) journalctl -u haproxy -e"
  fi
}

deploy_lb() {
  switch lb || die "switching lb failed; the API hosts run the new release" \
    "Look at: ssh root@$(plan .lb) journalctl -u haproxy -e; fix the cause and run this again."
  local name
  for name in "${apis[@]}"; do
    wait_for "$name: UP in HAProxy" is_up "$name" ||
      die "HAProxy does not see $name UP after ${timeout} s" \
        "Look at: ssh root@$(plan .lb) journalctl -u haproxy -e"
  done
  wait_for "the load balancer answers /readyz" lb_serves ||
    die "the load balancer does not answer /readyz on port $lb_port" \
      "Look at: ssh root@$(plan .lb) journalctl -u haproxy -e"
}

main() {
  while (($#)); do
    case $1 in
      --first) first=true ;;
      -h | --help)
        usage
        return 0
        ;;
      *) die "unknown argument: $1" "Usage: rates-deploy [--first] (rates-deploy --help)" ;;
    esac
    shift
  done
  command -v jq >/dev/null || die "jq is not on PATH" "nix run .#deploy brings it; or install jq."
  [[ -r $network ]] || die "cannot read the address plan $network" \
    "Set RATES_DEPLOY_NETWORK to nix/hosts/cluster/network.json of your checkout."
  mapfile -t apis < <(plan '.api | keys[]')
  password_file="$(plan .passwordFile)"
  backend="$(plan .haproxy.backend)"
  admin_socket="$(plan .haproxy.adminSocket)"
  api_port="$(plan .ports.api)"
  lb_port="$(plan .ports.lb)"
  readonly apis password_file backend admin_socket api_port lb_port

  out_of_rotation=()
  order=("${apis[@]}")
  preflight
  local start=$SECONDS name
  deploy_db
  for name in "${order[@]}"; do
    deploy_api "$name"
  done
  deploy_lb
  log "done in $((SECONDS - start)) s: db, ${order[*]}, lb"
}

main "$@"
