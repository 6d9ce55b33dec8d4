#!/usr/bin/env bash
# Herald: run a throwaway PostgreSQL server on 127.0.0.1 for tests and local runs.
#
#   deploy/local/postgres.sh start    # install server if missing, initdb, start, create role+db herald;
#                                     # last stdout line = postgresql://herald@127.0.0.1:<port>/herald
#   deploy/local/postgres.sh stop     # fast shutdown (immediate after 30 s); idempotent
#   deploy/local/postgres.sh status   # exit 0 if running (prints the URL), 3 if not
#
# Environment (defaults in brackets):
#   PG_PORT           [15432]
#   HERALD_LOCAL_DIR  [<repo>/.local]  the cluster lives in $HERALD_LOCAL_DIR/pg-<port>
#   PG_DATA_DIR       [$HERALD_LOCAL_DIR/pg-<port>]  override the cluster directory
#   PG_KEEP_DATA      [unset]  1 = reuse an existing cluster; otherwise it is wiped and re-created
#   PG_DURABLE        [unset]  1 = keep fsync/synchronous_commit/full_page_writes on (default: off,
#                              the cluster is throwaway and not crash-safe)
#   PG_BIN_DIR        [newest /usr/lib/postgresql/*/bin]
#
# `start` exits 98 when the port is taken (already listening, or lost to another process before the
# server could bind it), so a caller can retry on another port; 1 on any other failure.
#
# Auth: trust, TCP on 127.0.0.1 only (plus a unix socket inside the data dir). Superuser `postgres`,
# application role `herald` (LOGIN CREATEDB) owning database `herald`.
# When run as root the server runs as the `postgres` OS user (initdb/pg_ctl refuse root).
set -euo pipefail
export LC_NUMERIC=C  # "." in $EPOCHREALTIME

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
LOCAL_DIR="${HERALD_LOCAL_DIR:-$REPO_ROOT/.local}"
PG_PORT="${PG_PORT:-15432}"
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || { echo "postgres.sh: ERROR: PG_PORT '$PG_PORT' is not a number" >&2; exit 1; }
PGDATA_DIR="${PG_DATA_DIR:-$LOCAL_DIR/pg-$PG_PORT}"
PG_OS_USER=postgres
URL="postgresql://herald@127.0.0.1:$PG_PORT/herald"

log() { echo "postgres.sh: $*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
die() { echo "postgres.sh: ERROR: $*" >&2; exit 1; }
PORT_TAKEN=98
port_taken() { echo "postgres.sh: ERROR: $*" >&2; exit "$PORT_TAKEN"; }

find_bin_dir() {
  if [[ -n "${PG_BIN_DIR:-}" ]]; then echo "$PG_BIN_DIR"; return; fi
  local d best
  # highest major version, compared numerically
  best="$(for d in /usr/lib/postgresql/*/bin; do
            [[ -x "$d/pg_ctl" && -x "$d/initdb" && -x "$d/postgres" ]] && echo "$d"
          done | sort -t/ -k5,5n | tail -n1)"
  echo "$best"
}

install_server() {
  [[ "$(id -u)" == 0 ]] || die "PostgreSQL server binaries not found and not root: apt-get install postgresql"
  command -v apt-get >/dev/null || die "PostgreSQL server binaries not found and no apt-get"
  log "installing Debian's postgresql package (no default cluster is created)"
  export DEBIAN_FRONTEND=noninteractive
  local apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  apt-get update -q >&2
  # Install postgresql-common first and switch off its automatic "main" cluster on 5432.
  apt-get install "${apt_opts[@]}" --no-install-recommends postgresql-common >&2
  if [[ -f /etc/postgresql-common/createcluster.conf ]]; then
    sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
      /etc/postgresql-common/createcluster.conf
  fi
  apt-get install "${apt_opts[@]}" --no-install-recommends postgresql >&2
}

BIN=""
ensure_bin() {
  BIN="$(find_bin_dir)"
  if [[ -z "$BIN" ]]; then
    install_server
    BIN="$(find_bin_dir)"
  fi
  [[ -n "$BIN" && -x "$BIN/pg_ctl" ]] || die "no PostgreSQL server binaries (pg_ctl, initdb) found"
}

# Run a server-side command as the OS user owning the cluster (root cannot run initdb/pg_ctl).
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

ensure_os_user() {
  [[ "$(id -u)" == 0 ]] || return 0
  if ! id "$PG_OS_USER" >/dev/null 2>&1; then
    log "creating system user $PG_OS_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_OS_USER"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

is_running() {
  [[ -n "$BIN" && -f "$PGDATA_DIR/PG_VERSION" ]] || return 1
  as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1
}

psql_admin() {
  "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres
}

init_cluster() {
  local parent; parent="$(dirname "$PGDATA_DIR")"
  mkdir -p "$parent"
  rm -rf "$PGDATA_DIR"
  mkdir -p "$PGDATA_DIR"
  if [[ "$(id -u)" == 0 ]]; then
    chown "$PG_OS_USER:" "$PGDATA_DIR"
    runuser -u "$PG_OS_USER" -- test -w "$PGDATA_DIR" \
      || die "OS user $PG_OS_USER cannot reach $PGDATA_DIR (a parent directory is not traversable); set PG_DATA_DIR or HERALD_LOCAL_DIR to e.g. /tmp/herald-pg"
  fi
  chmod 700 "$PGDATA_DIR"
  log "initdb $PGDATA_DIR ($("$BIN/postgres" --version))"
  as_pg "$BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --no-locale --no-sync \
    >"$PGDATA_DIR.initdb.log" 2>&1 \
    || { cat "$PGDATA_DIR.initdb.log" >&2; rm -f "$PGDATA_DIR.initdb.log"; die "initdb failed"; }
  rm -f "$PGDATA_DIR.initdb.log"

  # unix socket inside the data dir when the path fits (sun_path is 108 bytes), else TCP only
  local sockdir="$PGDATA_DIR"
  if (( ${#sockdir} + 20 > 100 )); then sockdir=""; fi
  local durable="off"; [[ "${PG_DURABLE:-}" == 1 ]] && durable="on"
  as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null <<EOF

# ---- deploy/local/postgres.sh (throwaway local cluster) ----
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$sockdir'
max_connections = 100
fsync = $durable
synchronous_commit = $durable
full_page_writes = $durable
logging_collector = off
log_min_messages = warning
log_connections = off
EOF
  {
    echo "# deploy/local/postgres.sh: trust, loopback only"
    [[ -n "$sockdir" ]] && echo "local   all   all                 trust"
    echo "host    all   all   127.0.0.1/32  trust"
  } | as_pg tee "$PGDATA_DIR/pg_hba.conf" >/dev/null
}

cmd_start() {
  ensure_bin
  ensure_os_user
  if is_running; then
    die "PostgreSQL already running for $PGDATA_DIR; run '$0 stop' first or pick another PG_PORT"
  fi
  port_open "$PG_PORT" && port_taken "127.0.0.1:$PG_PORT is already in use by another process"

  local t0=$EPOCHREALTIME
  if [[ "${PG_KEEP_DATA:-}" == 1 && -f "$PGDATA_DIR/PG_VERSION" ]]; then
    log "PG_KEEP_DATA=1: reusing cluster $PGDATA_DIR"
  else
    init_cluster
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT (data $PGDATA_DIR)"
  if ! as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w -t 60 start >/dev/null; then
    tail -n 40 "$PGDATA_DIR/server.log" >&2 2>/dev/null || true
    if grep -qs "Address already in use" "$PGDATA_DIR/server.log"; then
      port_taken "PostgreSQL could not bind 127.0.0.1:$PG_PORT (taken by another process)"
    fi
    die "pg_ctl start failed"
  fi
  psql_admin <<'EOF'
SELECT 'CREATE ROLE herald LOGIN CREATEDB'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'herald') \gexec
SELECT 'CREATE DATABASE herald OWNER herald'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'herald') \gexec
EOF
  log "ready in $(since "$t0")s (log $PGDATA_DIR/server.log)"
  echo "$URL"
}

cmd_stop() {
  BIN="$(find_bin_dir)"
  if ! is_running; then
    log "no PostgreSQL running for $PGDATA_DIR"
    return 0
  fi
  log "stopping PostgreSQL ($PGDATA_DIR)"
  if ! as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop >/dev/null 2>&1; then
    log "fast shutdown did not finish in 30s; immediate shutdown"
    as_pg "$BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  is_running && die "PostgreSQL still running"
  log "stopped"
}

cmd_status() {
  BIN="$(find_bin_dir)"
  if is_running; then
    echo "running data=$PGDATA_DIR url=$URL"
    return 0
  fi
  echo "stopped (port $PG_PORT)"
  return 3
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {start|stop|status}  (see header of $0 for env vars)" >&2; exit 2 ;;
esac
