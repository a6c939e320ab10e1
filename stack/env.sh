# shellcheck shell=sh disable=SC2034 # its variables are for those that source it
# Where the local stack lives: its state directory and ports, and the libpq
# settings that reach its PostgreSQL. One home, sourced by the stack's steps
# (stack/lib.sh) and by the shells that reach the stack (.envrc), with
# RATES_ROOT set to the checkout.
#
# The state directory and the two ports come from .env in the checkout, or
# the defaults below, and from nowhere else: .env is the one file that the
# stack and every second shell (.envrc: nix develop, direnv, `source .envrc`)
# both read, so they agree on where the stack is. stack/about refuses an
# environment that says otherwise. POSIX sh: .envrc is sourced by bash, zsh
# and dash.

# rates_dotenv NAME: NAME's value in .env as process-compose reads that file
# (godotenv 1.5: the last `NAME=value` or `export NAME=value` line, quotes
# removed, a ` # comment` after an unquoted value dropped); nothing when unset.
rates_dotenv() {
  [ -f "$RATES_ROOT/.env" ] || return 0
  sed -n "s/^[[:space:]]*\(export[[:space:]][[:space:]]*\)\{0,1\}$1[[:space:]]*=[[:space:]]*//p" \
    "$RATES_ROOT/.env" | tail -n 1 |
    sed -e "s/^\"\([^\"]*\)\".*/\1/" -e t -e "s/^'\([^']*\)'.*/\1/" -e t \
      -e 's/[[:space:]][[:space:]]*#.*//' -e 's/[[:space:]]*$//'
}

# Data, password file, logs, lock; relative to the checkout.
rates_state_dir="$(rates_dotenv RATES_STATE_DIR)"
rates_state_dir="${rates_state_dir:-.state}"
# PostgreSQL's port on 127.0.0.1, and the API's on RATES_HOST.
rates_pg_port="$(rates_dotenv PGPORT)"
rates_pg_port="${rates_pg_port:-5432}"
rates_api_port="$(rates_dotenv RATES_PORT)"
rates_api_port="${rates_api_port:-3000}"
# The stack's PostgreSQL listens on loopback only, with a role and a
# database of its own; the password is generated on first start, into
# $rates_state_dir/pgpass.
rates_pg_host=127.0.0.1
rates_pg_user=rates
rates_pg_database=rates
