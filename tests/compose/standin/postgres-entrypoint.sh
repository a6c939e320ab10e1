#!/usr/bin/env bash
# Stand-in for the official postgres image's docker-entrypoint.sh, in the
# image testlib/containers.py builds from the host's PostgreSQL. It
# honours the parts of that image's contract docker-compose.yaml relies on, the same
# way: started as root, it reads POSTGRES_PASSWORD_FILE, takes PGDATA for the
# postgres user and starts itself again as that user; on an empty PGDATA it
# creates the cluster with POSTGRES_USER as superuser (password from the file),
# the database POSTGRES_DB, and password authentication for every TCP client.
# Not the official script: no initdb.d scripts, no POSTGRES_INITDB_ARGS, and the
# database is created in single-user mode rather than by a temporary server.
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

if [[ "${1:-}" != postgres ]]; then
  exec "$@"
fi

# As the official script does (file_env), whichever user it starts as: the
# secret is read first, so that as root the file need not be readable by
# postgres, and passed on in the environment. Started as another user
# (Kubernetes' runAsUser: 999, kubernetes/overlays/dev), that user reads it.
if [[ -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
  POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
  export POSTGRES_PASSWORD
  unset POSTGRES_PASSWORD_FILE
fi

if [[ "$(id -u)" == 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    echo "Error: Database is uninitialized and superuser password is not specified." >&2
    exit 1
  fi
  initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  if [[ "$POSTGRES_DB" != postgres ]]; then
    printf 'CREATE DATABASE "%s"\n' "$POSTGRES_DB" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "PostgreSQL init process complete; ready for start up."
fi
unset POSTGRES_PASSWORD
shift
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
