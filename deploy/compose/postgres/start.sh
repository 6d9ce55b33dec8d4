#!/bin/sh
# Initialise the cluster on first start (UTF-8: minbase has no locales), then run postgres.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username=postgres --encoding=UTF8 --locale=C.UTF-8 --auth-local=peer \
    --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  postgres -c listen_addresses='' -c unix_socket_directories=/run/postgresql &
  pid=$!
  until pg_isready -q -h /run/postgresql; do sleep 0.2; done
  psql -q -h /run/postgresql -v ON_ERROR_STOP=1 -v pw="$POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE herald LOGIN PASSWORD :'pw';
CREATE DATABASE herald OWNER herald;
SQL
  kill -INT "$pid"; wait "$pid"; rm -f "$pwfile"
fi
exec postgres -c listen_addresses='*' -c unix_socket_directories=/run/postgresql
