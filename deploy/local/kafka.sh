#!/usr/bin/env bash
# Herald: run a REAL single-node Apache Kafka broker (KRaft, combined broker+controller) on
# 127.0.0.1 without Docker, from the published Maven Central jars.
#
#   deploy/local/kafka.sh fetch    # download the jar set once into the cache (needs mvn + java)
#   deploy/local/kafka.sh start    # fetch if needed, format, start, wait; last stdout line = bootstrap
#   deploy/local/kafka.sh stop     # SIGTERM, wait <= 30 s, SIGKILL; idempotent
#   deploy/local/kafka.sh status   # exit 0 if running (prints pid + bootstrap), 3 if not
#
# Environment (defaults in brackets):
#   KAFKA_VERSION          [3.9.2]  3.9.x uses kafka/pom-3.9.xml, 4.x uses kafka/pom-4.x.xml (tested: 4.3.1)
#   KAFKA_PORT             [19092]  PLAINTEXT listener (client bootstrap) on 127.0.0.1
#   KAFKA_CONTROLLER_PORT  [KAFKA_PORT+1] KRaft controller listener on 127.0.0.1
#   HERALD_LOCAL_DIR       [<repo>/.local] cache + run state (git-ignored)
#   KAFKA_DATA_DIR         [$HERALD_LOCAL_DIR/kafka-run-<port>/data] log.dirs
#   KAFKA_KEEP_DATA        [unset]  1 = keep an existing data dir and skip formatting if already
#                                   formatted (broker restart); otherwise the data dir is wiped on start
#   KAFKA_HEAP_OPTS        [-Xms256m -Xmx512m]
#   KAFKA_JVM_PERFORMANCE_OPTS [G1, 20 ms pauses]  JIT and GC flags (as Kafka's own scripts name them)
#   KAFKA_START_TIMEOUT    [120]    seconds to wait for readiness
#   KAFKA_EXTRA_PROPERTIES [unset]  extra server.properties lines appended verbatim (newline-separated)
#
# Progress goes to stderr; `start` prints only the bootstrap address (127.0.0.1:<port>) on stdout.
# `start` exits 98 when a port is taken (already listening, or lost to another process before the
# broker could bind it), so a caller can retry on other ports; 1 on any other failure.
# Topics are NOT auto-created (auto.create.topics.enable=false): Herald creates its own topics.
set -euo pipefail
export LC_NUMERIC=C  # "." in $EPOCHREALTIME

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
LOCAL_DIR="${HERALD_LOCAL_DIR:-$REPO_ROOT/.local}"
KAFKA_VERSION="${KAFKA_VERSION:-3.9.2}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
RUN_DIR="$LOCAL_DIR/kafka-run-$KAFKA_PORT"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$RUN_DIR/data}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
MVN_DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

CACHE_DIR="$LOCAL_DIR/kafka-$KAFKA_VERSION"
LIBS_DIR="$CACHE_DIR/libs"
MARKER="$CACHE_DIR/.fetched"
PID_FILE="$RUN_DIR/kafka.pid"
PROPS_FILE="$RUN_DIR/server.properties"
LOG_DIR="$RUN_DIR/logs"
SERVER_LOG="$LOG_DIR/server.log"
OUT_FILE="$RUN_DIR/broker.out"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

log() { echo "kafka.sh: $*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
die() { echo "kafka.sh: ERROR: $*" >&2; exit 1; }
PORT_TAKEN=98
port_taken() { echo "kafka.sh: ERROR: $*" >&2; exit "$PORT_TAKEN"; }

case "$KAFKA_VERSION" in
  3.*) POM="$SCRIPT_DIR/kafka/pom-3.9.xml"; KAFKA_MAJOR=3
       LOG_OPTS=("-Dlog4j.configuration=file:$SCRIPT_DIR/kafka/log4j.properties") ;;
  4.*) POM="$SCRIPT_DIR/kafka/pom-4.x.xml"; KAFKA_MAJOR=4
       LOG_OPTS=("-Dlog4j2.configurationFile=$SCRIPT_DIR/kafka/log4j2.properties") ;;
  *)   die "unsupported KAFKA_VERSION=$KAFKA_VERSION (3.9.x or 4.x)" ;;
esac

for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
  [[ "$p" =~ ^[0-9]+$ ]] || die "port '$p' is not a number"
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid from the pid file, if that process is alive and is our broker; empty otherwise.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$PROPS_FILE"; then
    echo "$pid"
  fi
}

pom_fingerprint() { echo "version=$KAFKA_VERSION pom=$(sha256sum "$POM" | cut -d' ' -f1)"; }

cmd_fetch() {
  command -v java >/dev/null || die "java not found (Java 17+ needed; apt-get install openjdk-17-jre-headless)"
  if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(pom_fingerprint)" ]]; then
    log "jars for Kafka $KAFKA_VERSION already in $LIBS_DIR"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  mkdir -p "$CACHE_DIR"
  # Serialise concurrent fetches (e.g. parallel test sessions) on the same cache.
  exec 9>"$CACHE_DIR/.lock"
  flock 9
  if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(pom_fingerprint)" ]]; then
    exec 9>&-; return 0
  fi
  log "fetching Kafka $KAFKA_VERSION runtime jars from Maven Central into $LIBS_DIR"
  local tmp="$CACHE_DIR/libs.tmp.$$"
  rm -rf "$tmp"
  # -q prints only errors; Debian's mvn 3.8 still emits bare ANSI resets, hence the sed.
  if ! mvn -B -q -Dstyle.color=never -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
        "$MVN_DEP_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 \
      | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
    rm -rf "$tmp"
    die "maven could not resolve Kafka $KAFKA_VERSION (see above)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "no kafka_2.13 jar after fetch"; }
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  pom_fingerprint >"$MARKER"
  exec 9>&-
  log "fetched $(find "$LIBS_DIR" -name "*.jar" | wc -l) jars, $(du -sh "$LIBS_DIR" | cut -f1)"
}

write_properties() {
  mkdir -p "$RUN_DIR"
  cat >"$PROPS_FILE" <<EOF
# Generated by deploy/local/kafka.sh for Kafka $KAFKA_VERSION; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA_DIR
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
# Herald creates its topics itself (admin client); nothing is created implicitly.
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
EOF
  if [[ "$KAFKA_MAJOR" == 4 ]]; then
    cat >>"$PROPS_FILE" <<EOF
# 4.x share groups: internal topic defaults are RF 3 / min ISR 2
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4
EOF
  fi
  if [[ -n "${KAFKA_EXTRA_PROPERTIES:-}" ]]; then
    printf '# KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$PROPS_FILE"
  fi
}

# Storage tool runs log (if at all) to logs/tools/server.log, never into the broker's server.log.
java_cp() { java -Dkafka.logs.dir="$LOG_DIR/tools" "${LOG_OPTS[@]}" -cp "$LIBS_DIR/*" "$@"; }

format_storage() {
  if [[ "${KAFKA_KEEP_DATA:-}" == 1 && -f "$KAFKA_DATA_DIR/meta.properties" ]]; then
    log "KAFKA_KEEP_DATA=1: reusing formatted data dir $KAFKA_DATA_DIR"
    return 0
  fi
  if [[ "${KAFKA_KEEP_DATA:-}" != 1 ]]; then
    rm -rf "$KAFKA_DATA_DIR"
  fi
  mkdir -p "$KAFKA_DATA_DIR"
  local cluster_id
  cluster_id="$(java_cp kafka.tools.StorageTool random-uuid 2>>"$OUT_FILE" | tail -n1)"
  [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing (see $OUT_FILE)"
  log "formatting $KAFKA_DATA_DIR (cluster id $cluster_id)"
  java_cp kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS_FILE" >>"$OUT_FILE" 2>&1 \
    || { tail -n 30 "$OUT_FILE" >&2; die "storage format failed"; }
}

show_failure() {
  log "---- tail of $SERVER_LOG ----"
  tail -n 60 "$SERVER_LOG" >&2 2>/dev/null || true
  log "---- tail of $OUT_FILE ----"
  tail -n 30 "$OUT_FILE" >&2 2>/dev/null || true
}

cmd_start() {
  T_START=$EPOCHREALTIME
  local pid; pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    die "a broker is already running on $BOOTSTRAP (pid $pid); run '$0 stop' first or pick another KAFKA_PORT"
  fi
  rm -f "$PID_FILE"
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$p" && port_taken "127.0.0.1:$p is already in use by another process"
  done
  cmd_fetch
  if [[ "$KAFKA_MAJOR" == 4 ]]; then
    local jv; jv="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    [[ "${jv%%.*}" -ge 17 ]] 2>/dev/null || die "Kafka 4.x needs Java 17+, found '$jv'"
  fi

  mkdir -p "$RUN_DIR"
  rm -rf "$LOG_DIR.prev"; [[ -d "$LOG_DIR" ]] && mv "$LOG_DIR" "$LOG_DIR.prev"
  mkdir -p "$LOG_DIR"
  : >"$OUT_FILE"
  write_properties
  format_storage

  local t0=$EPOCHREALTIME
  log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
  # setsid: own session, so the broker outlives this script and a Ctrl-C in the caller's
  # terminal; the inner shell writes its own pid, then execs java (same pid).
  # shellcheck disable=SC2086,SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    java $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS \
      -Djava.awt.headless=true -Dkafka.logs.dir="$LOG_DIR" "${LOG_OPTS[@]}" \
      -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS_FILE" \
      </dev/null >>"$OUT_FILE" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || die "broker did not start (no pid file)"

  local deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_failure; rm -f "$PID_FILE"
      if grep -qs "Address already in use" "$SERVER_LOG" "$OUT_FILE"; then
        port_taken "broker process $pid could not bind its ports (taken by another process)"
      fi
      die "broker process $pid exited during startup"
    fi
    if port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$SERVER_LOG" 2>/dev/null; then
      break
    fi
    if ((SECONDS >= deadline)); then
      show_failure
      log "not ready after ${KAFKA_START_TIMEOUT}s; stopping it"
      cmd_stop >/dev/null 2>&1 || true
      die "broker did not become ready"
    fi
    sleep 0.25
  done
  log "ready in $(since "$t0")s after launch, $(since "$T_START")s in all (pid $pid, log $SERVER_LOG)"
  echo "$BOOTSTRAP"
}

cmd_stop() {
  local pid; pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PID_FILE"
    log "no broker running for port $KAFKA_PORT"
    return 0
  fi
  log "stopping broker pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after 30s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  local pid; pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    local ver; ver="$(sed -n '1s/.* for Kafka \([^;]*\);.*/\1/p' "$PROPS_FILE" 2>/dev/null || true)"
    echo "running pid=$pid version=${ver:-?} bootstrap=$BOOTSTRAP data=$(sed -n 's/^log.dirs=//p' "$PROPS_FILE")"
    return 0
  fi
  echo "stopped (port $KAFKA_PORT)"
  return 3
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {fetch|start|stop|status}  (see header of $0 for env vars)" >&2; exit 2 ;;
esac
