#!/usr/bin/env bash
# Compose stack check (called by deploy/ci/run.sh, which sets TOOLS, IMAGE, PY): build the
# images, bring the stack up with podman-compose (without Grafana, whose image is not built
# here), wait for readiness (podman ignores service_healthy), run the end-to-end scenario
# against it, check that Prometheus scrapes every Herald process and loaded the rules, and take
# the stack down with its volumes.
set -euo pipefail
COMPOSE_FILE=deploy/compose/compose.yaml
SERVICES=(kafka postgres migrate ingest matcher-1 matcher-2 dispatcher-1 dispatcher-2 prometheus)
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export HERALD_IMAGE="$IMAGE" POSTGRES_PASSWORD="ci-$RANDOM$RANDOM"
export HERALD_COMPOSE_PORT HERALD_COMPOSE_PROMETHEUS_PORT HERALD_BASE_URL
HERALD_COMPOSE_PORT="$(free_port)"
HERALD_COMPOSE_PROMETHEUS_PORT="$(free_port)"
HERALD_BASE_URL="http://127.0.0.1:$HERALD_COMPOSE_PORT/fhir"
compose() { "$TOOLS/podman-compose" -f "$COMPOSE_FILE" "$@"; }

SKIP_HERALD_IMAGE=1 deploy/compose/build-images.sh
down() { compose down -v -t 10 >/dev/null 2>&1 || true; }
trap down EXIT
down
compose up -d "${SERVICES[@]}" >/dev/null

# The dispatchers reach the receiver on this host as host.containers.internal.
if ! "$PY" -m tests.deploy.smoke scenario "$HERALD_BASE_URL" --bind 0.0.0.0 \
    --advertise host.containers.internal --ready-timeout 180; then
  for s in "${SERVICES[@]}"; do echo "---- $s" >&2; compose logs --tail 20 "$s" >&2 || true; done
  exit 1
fi

# Every Herald process is scraped, up and ready; the rules are loaded.
"$PY" - "$HERALD_COMPOSE_PROMETHEUS_PORT" <<'PY'
import sys, time, httpx
base = f"http://127.0.0.1:{sys.argv[1]}/api/v1"
deadline = time.monotonic() + 90
while True:
    ready = httpx.get(f"{base}/query", params={"query": "sum(herald_ready)"}).json()["data"]["result"]
    up = httpx.get(f"{base}/query", params={"query": 'sum(up{job=~"herald-.*"})'}).json()["data"]["result"]
    if ready and up and float(ready[0]["value"][1]) == 5 and float(up[0]["value"][1]) == 5:
        break
    assert time.monotonic() < deadline, f"Prometheus sees up={up} ready={ready}, not 5 each"
    time.sleep(2)
groups = httpx.get(f"{base}/rules").json()["data"]["groups"]
assert {g["name"] for g in groups} == {"herald", "herald-slo"}, groups
print("Prometheus scrapes 5 ready Herald processes and evaluates Herald's rules")
PY
