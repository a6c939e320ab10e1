# shellcheck shell=bash
# What every step of the local stack shares, sourced by each script here:
# where the stack lives (env.sh), the libpq variables that reach its
# PostgreSQL, and how a step that stops the stack says why. process-compose
# runs the steps from the checkout's root (process-compose.yaml), where it
# read .env too.
set -Eeuo pipefail

RATES_ROOT="$PWD"
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

state="$rates_state_dir"
pg_port="$rates_pg_port"
api_host="${RATES_HOST:-127.0.0.1}"
api_port="$rates_api_port"
# Each step's own name, for its log lines.
step="${0##*/}"
# `about` reads "STATUS REASON" lines here: why a step stopped the stack.
fifo="$state/stop.fifo"

export PGHOST="$rates_pg_host" PGPORT="$pg_port" PGUSER="$rates_pg_user"
export PGDATABASE="$rates_pg_database" PGPASSFILE="$state/pgpass"
export RATES_HOST="$api_host" RATES_PORT="$api_port"

# in_use HOST PORT: something accepts connections there. A wildcard HOST
# (0.0.0.0, ::) reaches this host: the kernel connects it to loopback.
in_use() {
  local host="${1#[}"
  (exec 3<>"/dev/tcp/${host%]}/$2") 2>/dev/null
}

# url HOST PORT: the API's address as a URL.
url() {
  case "$1" in
    \[*) echo "http://$1:$2" ;;
    *:*) echo "http://[$1]:$2" ;;
    *) echo "http://$1:$2" ;;
  esac
}

# tell_about STATUS REASON: the stack stops, and why. `about` shows the
# reason, stops the stack, and gives STATUS to process-compose to exit with.
tell_about() {
  if [[ -p "$fifo" ]]; then
    printf '%s %s\n' "$1" "$2" 1<>"$fifo"
  fi
}

# stop_stack STATUS REASON: the same, said in this step's own log too.
stop_stack() {
  echo "$step: $2" >&2
  tell_about "$@"
}

# taken PORT HOST VARIABLE: why the stack stops when a port is in use.
taken() {
  echo "port $1 on $2 is in use; set $3 to a free port in .env"
}
