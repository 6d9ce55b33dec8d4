#!/usr/bin/env bash
# Herald in distributed mode on one machine: real Kafka and PostgreSQL from this folder, then
# `herald ingest`, `herald matcher` and `herald dispatcher` as three processes.
#
#   deploy/local/herald.sh start           # prints the FHIR base URL once every role is ready
#   deploy/local/herald.sh stop            # what `start` started, with the ports it recorded
#   deploy/local/herald.sh status          # each role (pid, port, /readyz), Kafka, PostgreSQL
#   deploy/local/herald.sh restart ROLE    # one role alone: ingest, matcher or dispatcher
#
# Ports (defaults never collide): HERALD_PORT (FHIR API and ingest's /metrics, 8080),
# MATCHER_HEALTH_PORT (9101) and DISPATCHER_HEALTH_PORT (9102) for the matcher's and the
# dispatcher's /metrics, /healthz, /readyz; Kafka on KAFKA_PORT (19092, controller 19093) and
# PostgreSQL on PG_PORT (15432). With HERALD_KAFKA_BOOTSTRAP or HERALD_DATABASE_URL set, that
# server is yours: it is used, not started or stopped.
#
# `start` fails (exit 1, the failing role's log shown, everything it started stopped again) unless
# every role answers /readyz. Needs the virtualenv of `make run` (.venv with herald installed).
# For local use, http:// and loopback subscriber endpoints are allowed; every other HERALD_*
# variable set in the environment of `start` is passed on and recorded, so that `restart` runs
# the role with the same settings (a variable set for `restart` itself wins). Logs (appended)
# and state (mode 600: it holds the settings) go to $HERALD_LOCAL_DIR/herald-run/.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
LOCAL_DIR="${HERALD_LOCAL_DIR:-$REPO_ROOT/.local}"
RUN_DIR="$LOCAL_DIR/herald-run"
STATE="$RUN_DIR/state.env"
HERALD_BIN="${HERALD_BIN:-$REPO_ROOT/.venv/bin/herald}"
READY_TIMEOUT="${HERALD_READY_TIMEOUT:-90}"
ROLES=(ingest matcher dispatcher)

log() { echo "herald.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The port of each role's /readyz: the FHIR port for ingest, its health port for the others.
role_port() {
  case "$1" in
    ingest) echo "$API_PORT" ;;
    matcher) echo "$MATCHER_PORT" ;;
    dispatcher) echo "$DISPATCHER_PORT" ;;
    *) die "unknown role '$1' (ingest, matcher or dispatcher)" ;;
  esac
}

save_state() {  # names...: append NAME=value lines (sourced again by load_state)
  local name
  for name in "$@"; do printf '%s=%q\n' "$name" "${!name}"; done >>"$STATE"
}

# The HERALD_* settings of `start`, for `restart`: a role restarted without them would run with
# other settings than its peers (another HERALD_KAFKA_TOPIC_PREFIX, say, and it would consume
# topics nobody writes to). The script's own variables and those `launch` sets are left out.
save_settings() {
  local name
  for name in $(compgen -e); do
    case "$name" in
      HERALD_LOCAL_DIR | HERALD_BIN | HERALD_READY_TIMEOUT | HERALD_KAFKA_BOOTSTRAP | \
        HERALD_DATABASE_URL | HERALD_PORT | HERALD_HEALTH_PORT) ;;
      HERALD_*) printf '[[ -v %s ]] || export %s=%q\n' "$name" "$name" "${!name}" ;;
    esac
  done >>"$STATE"
}

load_state() {
  [[ -f "$STATE" ]] || die "nothing started here ($STATE missing); run '$0 start'"
  # shellcheck disable=SC1090
  source "$STATE"
}

role_pid() {
  local pid_file="$RUN_DIR/$1.pid" pid
  [[ -f "$pid_file" ]] || return 1
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ready() { curl -fsS -m 3 "http://127.0.0.1:$(role_port "$1")/readyz" >/dev/null 2>&1; }

local_defaults() {  # for local use: http:// and loopback endpoints, readable logs, no auth on loopback
  export HERALD_ALLOW_HTTP_ENDPOINTS="${HERALD_ALLOW_HTTP_ENDPOINTS:-true}"
  export HERALD_AUTH="${HERALD_AUTH:-none}"
  export HERALD_ALLOW_PRIVATE_ENDPOINTS="${HERALD_ALLOW_PRIVATE_ENDPOINTS:-true}"
  export HERALD_LOG_FORMAT="${HERALD_LOG_FORMAT:-text}"
}

launch() {
  local role="$1" port
  port="$(role_port "$role")"
  if port_open "$port"; then
    log "ERROR: port $port of the $role is already in use (HERALD_PORT, MATCHER_HEALTH_PORT, DISPATCHER_HEALTH_PORT)"
    return 1
  fi
  # A static consumer-group name, unique on this host (one instance per port): `restart ROLE`
  # and a crash followed by a restart take the partitions back without waiting for a rebalance.
  local host="${HOSTNAME%%.*}" instance
  instance="${HERALD_INSTANCE_ID:-$role-${host//[^A-Za-z0-9_-]/-}-$port}"
  # shellcheck disable=SC2016
  HERALD_KAFKA_BOOTSTRAP="$BOOTSTRAP" HERALD_DATABASE_URL="$DATABASE_URL" HERALD_PORT="$API_PORT" \
    HERALD_HEALTH_PORT="$port" HERALD_INSTANCE_ID="$instance" \
    setsid "$HERALD_BIN" "$role" >>"$RUN_DIR/$role.log" 2>&1 &
  echo $! >"$RUN_DIR/$role.pid"
  log "$role started (pid $!, port $port, log $RUN_DIR/$role.log)"
}

wait_ready() {  # roles...: until each answers /readyz; on a death or a time-out, show its log
  local deadline=$((SECONDS + READY_TIMEOUT)) role pending=("$@")
  while ((${#pending[@]})); do
    local still=()
    for role in "${pending[@]}"; do
      if ready "$role"; then
        continue
      fi
      if ! role_pid "$role" >/dev/null; then
        log "the $role exited during start; the end of $RUN_DIR/$role.log:"
        tail -n 30 "$RUN_DIR/$role.log" >&2
        return 1
      fi
      still+=("$role")
    done
    pending=("${still[@]+"${still[@]}"}")
    ((${#pending[@]})) || break
    if ((SECONDS >= deadline)); then
      for role in "${pending[@]}"; do
        log "the $role is not ready after $READY_TIMEOUT s; the end of $RUN_DIR/$role.log:"
        tail -n 30 "$RUN_DIR/$role.log" >&2
      done
      return 1
    fi
    sleep 0.5
  done
}

stop_role() {
  local role="$1" pid
  if pid="$(role_pid "$role")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    log "$role stopped"
  fi
  rm -f "$RUN_DIR/$role.pid"
}

start() {
  [[ -x "$HERALD_BIN" ]] || die "no $HERALD_BIN; run 'make run' once (or set HERALD_BIN)"
  mkdir -p "$RUN_DIR"
  if [[ -f "$STATE" ]]; then
    for role in "${ROLES[@]}"; do
      role_pid "$role" >/dev/null && die "already started (the $role runs); '$0 stop' first"
    done
  fi
  API_PORT="${HERALD_PORT:-8080}"
  MATCHER_PORT="${MATCHER_HEALTH_PORT:-9101}"
  DISPATCHER_PORT="${DISPATCHER_HEALTH_PORT:-9102}"
  KAFKA_PORT="${KAFKA_PORT:-19092}"
  PG_PORT="${PG_PORT:-15432}"
  local ports=("$API_PORT" "$MATCHER_PORT" "$DISPATCHER_PORT")
  [[ "$(printf '%s\n' "${ports[@]}" | sort -u | wc -l)" == 3 ]] || die "HERALD_PORT, MATCHER_HEALTH_PORT and DISPATCHER_HEALTH_PORT must differ"
  # Fail before starting anything when a port is taken (a role would die at start).
  local port
  for port in "${ports[@]}"; do
    port_open "$port" && die "port $port is already in use; set HERALD_PORT, MATCHER_HEALTH_PORT or DISPATCHER_HEALTH_PORT"
  done
  OWN_KAFKA=""; OWN_PG=""
  [[ -n "${HERALD_KAFKA_BOOTSTRAP:-}" ]] || OWN_KAFKA=1
  [[ -n "${HERALD_DATABASE_URL:-}" ]] || OWN_PG=1
  # Recorded first, so that `stop` cleans up after a start that fails half-way.
  (umask 077 && : >"$STATE") && chmod 600 "$STATE"
  save_state API_PORT MATCHER_PORT DISPATCHER_PORT KAFKA_PORT PG_PORT OWN_KAFKA OWN_PG
  BOOTSTRAP="${HERALD_KAFKA_BOOTSTRAP:-$(KAFKA_PORT="$KAFKA_PORT" "$SCRIPT_DIR/kafka.sh" start)}" || { stop; exit 1; }
  DATABASE_URL="${HERALD_DATABASE_URL:-$(PG_PORT="$PG_PORT" "$SCRIPT_DIR/postgres.sh" start)}" || { stop; exit 1; }
  save_state BOOTSTRAP DATABASE_URL
  local_defaults
  save_settings
  HERALD_KAFKA_BOOTSTRAP="$BOOTSTRAP" HERALD_DATABASE_URL="$DATABASE_URL" "$HERALD_BIN" migrate \
    >>"$RUN_DIR/migrate.log" 2>&1 || { tail -n 30 "$RUN_DIR/migrate.log" >&2; stop; die "herald migrate failed"; }
  local role
  for role in "${ROLES[@]}"; do
    launch "$role" || { stop; exit 1; }
  done
  if ! wait_ready "${ROLES[@]}"; then
    stop
    die "Herald did not start"
  fi
  echo "http://127.0.0.1:$API_PORT/fhir"
}

stop() {
  load_state
  local role
  for role in "${ROLES[@]}"; do stop_role "$role"; done
  [[ -z "$OWN_KAFKA" ]] || KAFKA_PORT="$KAFKA_PORT" "$SCRIPT_DIR/kafka.sh" stop
  [[ -z "$OWN_PG" ]] || PG_PORT="$PG_PORT" "$SCRIPT_DIR/postgres.sh" stop
  rm -f "$STATE"
}

restart() {
  local role="${1:-}"
  load_state
  role_port "$role" >/dev/null
  stop_role "$role"
  local_defaults
  launch "$role" || exit 1
  wait_ready "$role" || die "the $role did not become ready"
  log "$role ready"
}

status() {
  local code=0 role pid
  load_state
  for role in "${ROLES[@]}"; do
    if pid="$(role_pid "$role")"; then
      if ready "$role"; then
        echo "$role ready (pid $pid, port $(role_port "$role"))"
      else
        echo "$role running, NOT ready (pid $pid, port $(role_port "$role"))"; code=3
      fi
    else
      echo "$role stopped"; code=3
    fi
  done
  local out
  if [[ -n "$OWN_KAFKA" ]]; then
    out="$(KAFKA_PORT="$KAFKA_PORT" "$SCRIPT_DIR/kafka.sh" status)" || code=3
    echo "kafka $out"
  else
    echo "kafka external ($BOOTSTRAP)"
  fi
  if [[ -n "$OWN_PG" ]]; then
    out="$(PG_PORT="$PG_PORT" "$SCRIPT_DIR/postgres.sh" status)" || code=3
    echo "postgres $out"
  else
    echo "postgres external"
  fi
  return "$code"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) restart "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|restart ROLE" >&2; exit 2 ;;
esac
