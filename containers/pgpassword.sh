#!/bin/sh
# The database password of docker-compose.yaml's stack, made by the stack
# itself on its first `up`: the one-shot service pgpassword runs this script
# in PostgreSQL's image before PostgreSQL starts, with the volume secrets at
# /run/secrets and PostgreSQL's data volume, read-only, at PGDATA.
#
# The password lives in the volume secrets, beside the data in the volume
# postgres-data: `docker compose down` keeps both, `down -v` deletes both, and
# nothing on the host (no file, no openssl, no chmod) holds or makes it.
# It runs as root with group 65534, the rates image's user, so the file is
# -r--r----- root:65534: PostgreSQL's entry point reads it as root, the seed
# and the API as 65534, and no one else.
set -eu

secret=/run/secrets/pgpassword
data="${PGDATA:-/var/lib/postgresql/data}"

if [ -s "$secret" ]; then
  echo "pgpassword: kept the password in the volume secrets"
  exit 0
fi

# A database with no password for it: the volume secrets was removed on its
# own (or the data comes from before the stack made its password). A new
# password would not open it; say so instead of failing at the seed's login.
# An assignment, so that a data directory this script cannot read stops it.
contents="$(ls -A "$data")"
if [ -n "$contents" ]; then
  echo "pgpassword: the volume postgres-data holds a database, but the volume secrets has no password for it" >&2
  echo "pgpassword: to start afresh: docker compose down -v (deletes the data; the next up loads it again)" >&2
  exit 1
fi

# 24 random bytes as 48 hex digits, checked: a pipeline's failure would
# otherwise pass unseen. Written under another name, then renamed, so that a
# reader never finds half a password; mode 0440 from the umask.
password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
if [ "${#password}" -ne 48 ]; then
  echo "pgpassword: could not read 24 random bytes from /dev/urandom" >&2
  exit 1
fi
umask 0227
rm -f "$secret.new"
printf '%s\n' "$password" >"$secret.new"
mv -f "$secret.new" "$secret"
echo "pgpassword: made a new password in the volume secrets"
