#!/usr/bin/env bash
# Build the images of the compose stack with podman, for hosts that reach no container registry:
# Herald (`make image`), and Kafka, PostgreSQL and Prometheus from Debian's packages and the
# Kafka jars of Maven Central, all on the base image of deploy/container/base.sh.
#   deploy/compose/build-images.sh           # prints nothing; images localhost/herald-*
# Set SKIP_HERALD_IMAGE=1 when `make image` already ran.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-3.9.2}"
LOCAL_DIR="${HERALD_LOCAL_DIR:-$REPO_ROOT/.local}"
BASE="${HERALD_BASE_IMAGE:-$("$REPO_ROOT/deploy/container/base.sh")}"
log() { echo "build-images.sh: $*" >&2; }

build() {  # tag context
  if podman image exists "$1"; then
    log "$1 exists"
    return
  fi
  log "building $1"
  podman build --quiet --network host --build-arg BASE="$BASE" -t "$1" "$2" >/dev/null
}

[[ -n "${SKIP_HERALD_IMAGE:-}" ]] || make -C "$REPO_ROOT" image HERALD_BASE_IMAGE="$BASE" >&2

KAFKA_VERSION="$KAFKA_VERSION" "$REPO_ROOT/deploy/local/kafka.sh" fetch
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp -r "$SCRIPT_DIR/kafka/." "$context/"
cp -r "$LOCAL_DIR/kafka-$KAFKA_VERSION/libs" "$context/libs"
build "localhost/herald-kafka:$KAFKA_VERSION" "$context"
build localhost/herald-postgres:15 "$SCRIPT_DIR/postgres"
build localhost/herald-prometheus:latest "$SCRIPT_DIR/prometheus"
