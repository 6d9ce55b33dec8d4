#!/usr/bin/env bash
# Herald in distributed mode on one machine: real Kafka and PostgreSQL from this folder, then
# `herald ingest`, `herald matcher` and `herald dispatcher` as three processes.
#
#   deploy/local/herald.sh start    # FHIR API at http://127.0.0.1:${HERALD_PORT:-8080}/fhir
#   deploy/local/herald.sh stop     # SIGTERM the three services, then stop Kafka and PostgreSQL
#   deploy/local/herald.sh status
#
# Needs the virtualenv of `make run` (.venv with herald installed). For local use, http:// and
# loopback subscriber endpoints are allowed (HERALD_ALLOW_HTTP_ENDPOINTS / _PRIVATE_ENDPOINTS)
# and authentication is off unless HERALD_AUTH=smart is set (the services listen on loopback);
# every other HERALD_* variable set in the environment is passed on. Logs and pids go to
# $HERALD_LOCAL_DIR/herald-run/.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
LOCAL_DIR="${HERALD_LOCAL_DIR:-$REPO_ROOT/.local}"
RUN_DIR="$LOCAL_DIR/herald-run"
HERALD_BIN="${HERALD_BIN:-$REPO_ROOT/.venv/bin/herald}"
ROLES=(ingest matcher dispatcher)

log() { echo "herald.sh: $*" >&2; }

start() {
  [[ -x "$HERALD_BIN" ]] || { log "no $HERALD_BIN; run 'make run' once (or set HERALD_BIN)"; exit 1; }
  mkdir -p "$RUN_DIR"
  local bootstrap url port
  bootstrap="${HERALD_KAFKA_BOOTSTRAP:-$("$SCRIPT_DIR/kafka.sh" start)}"
  url="${HERALD_DATABASE_URL:-$("$SCRIPT_DIR/postgres.sh" start)}"
  port="${HERALD_PORT:-8080}"
  export HERALD_KAFKA_BOOTSTRAP="$bootstrap" HERALD_DATABASE_URL="$url" HERALD_PORT="$port"
  export HERALD_ALLOW_HTTP_ENDPOINTS="${HERALD_ALLOW_HTTP_ENDPOINTS:-true}"
  export HERALD_ALLOW_PRIVATE_ENDPOINTS="${HERALD_ALLOW_PRIVATE_ENDPOINTS:-true}"
  export HERALD_LOG_FORMAT="${HERALD_LOG_FORMAT:-text}"
  export HERALD_AUTH="${HERALD_AUTH:-none}"
  "$HERALD_BIN" migrate
  local health=$((port + 1010))
  for role in "${ROLES[@]}"; do
    HERALD_HEALTH_PORT="$health" setsid "$HERALD_BIN" "$role" >"$RUN_DIR/$role.log" 2>&1 &
    echo $! >"$RUN_DIR/$role.pid"
    log "$role started (pid $!, log $RUN_DIR/$role.log, health port $health)"
    health=$((health + 1))
  done
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      echo "http://127.0.0.1:$port/fhir"
      return 0
    fi
    sleep 0.2
  done
  log "ingest did not become ready; see $RUN_DIR/ingest.log"
  exit 1
}

stop() {
  for role in "${ROLES[@]}"; do
    local pid_file="$RUN_DIR/$role.pid"
    [[ -f "$pid_file" ]] || continue
    local pid
    pid="$(cat "$pid_file")"
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    log "$role stopped"
  done
  [[ -n "${HERALD_KAFKA_BOOTSTRAP:-}" ]] || "$SCRIPT_DIR/kafka.sh" stop
  [[ -n "${HERALD_DATABASE_URL:-}" ]] || "$SCRIPT_DIR/postgres.sh" stop
}

status() {
  local code=0
  for role in "${ROLES[@]}"; do
    if [[ -f "$RUN_DIR/$role.pid" ]] && kill -0 "$(cat "$RUN_DIR/$role.pid")" 2>/dev/null; then
      echo "$role running (pid $(cat "$RUN_DIR/$role.pid"))"
    else
      echo "$role stopped"; code=3
    fi
  done
  return "$code"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
