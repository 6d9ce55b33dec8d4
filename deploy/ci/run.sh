#!/usr/bin/env bash
# The deploy checks (`make deploy-check`, run by .ci/run after `make test`):
#   rules      promtool check + `promtool test rules`, every alert tested
#   dashboard  the Grafana dashboard is what its code generates; every query checked
#   wheel      the wheel, installed in a fresh virtualenv outside the checkout, serves
#              metadata in JSON and XML and delivers a notification (embedded Herald)
#   image      `make image`, then the image runs read-only as non-root, delivers a notification
#              and stops on SIGTERM
#   chart      helm lint --strict, helm template | kubernetes-validate --strict for two Kubernetes
#              versions, kube-score, `podman kube play` of the embedded Deployment
#   compose    the compose stack up, the end-to-end scenario against it, Prometheus scraping, down
# With arguments, only those steps run: deploy/ci/run.sh rules chart
# Tools are installed on first use and cached by version under $HERALD_CI_CACHE (env.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/ci/env.sh
export PY="${PY:-.venv/bin/python}"
export IMAGE="${IMAGE:-localhost/herald:$(sed -n 's/^__version__ = "\(.*\)"/\1/p' services/__init__.py)}"
KUBE_VERSIONS=(1.30.0 1.34.0)

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

step_rules() {
  promtool check rules --lint=all deploy/prometheus/alerts.yml
  promtool check config deploy/prometheus/prometheus.yml
  promtool check config --syntax-only deploy/compose/prometheus.yml
  promtool test rules deploy/prometheus/alerts_test.yml
  # An alert without a test would pass unnoticed.
  local alert
  for alert in $(sed -n 's/^ *- alert: //p' deploy/prometheus/alerts.yml); do
    grep -q "alertname: $alert\b" deploy/prometheus/alerts_test.yml || { ci_log "no test for $alert"; return 1; }
  done
}

step_dashboard() {
  "$TOOLS/python" deploy/grafana/dashboard.py --check
  "$TOOLS/python" deploy/ci/check_queries.py
  "$TOOLS/python" - <<'PY'
import yaml, pathlib
for path in pathlib.Path("deploy/compose/grafana/provisioning").rglob("*.yml"):
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == 1 and (doc.get("datasources") or doc.get("providers")), path
PY
}

step_wheel() {
  local work port pid
  work="$(mktemp -d)"
  rm -rf build/wheel
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir build/wheel .
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet build/wheel/herald-*.whl
  port="$(free_port)"
  # Outside the checkout, so nothing is found through the source tree.
  (cd "$work" && HERALD_PORT="$port" HERALD_DATABASE_URL="sqlite:///$work/herald.db" \
    exec "$work/venv/bin/herald" run >"$work/herald.log" 2>&1) &
  pid=$!
  if ! "$PY" -m tests.deploy.smoke embedded "http://127.0.0.1:$port/fhir" --ready-timeout 60; then
    tail -n 40 "$work/herald.log" >&2; kill "$pid"; return 1
  fi
  kill -TERM "$pid"; wait "$pid"
  rm -rf "$work"
}

step_image() {
  make image IMAGE="$IMAGE"
  local port name=herald-ci-smoke started
  port="$(free_port)"
  podman rm -f -v -t 0 "$name" >/dev/null 2>&1 || true
  podman run -d --name "$name" --network host --read-only --tmpfs /tmp \
    -e HERALD_HOST=127.0.0.1 -e HERALD_PORT="$port" "$IMAGE" run >/dev/null
  [[ "$(podman exec "$name" id -u)" == 10001 ]] || { ci_log "the image runs as root"; return 1; }
  if ! "$PY" -m tests.deploy.smoke embedded "http://127.0.0.1:$port/fhir" --ready-timeout 60; then
    podman logs --tail 40 "$name" >&2; podman rm -f -v -t 0 "$name" >/dev/null; return 1
  fi
  # PID 1 handles SIGTERM: the container stops well before podman's 20 s escalation to SIGKILL.
  started=$SECONDS
  podman stop -t 20 "$name" >/dev/null
  local code; code="$(podman inspect -f '{{.State.ExitCode}}' "$name")"
  podman rm -f -v -t 0 "$name" >/dev/null
  ((SECONDS - started < 15)) && [[ "$code" == 0 ]] || { ci_log "SIGTERM: exit $code after $((SECONDS - started)) s"; return 1; }
}

step_chart() {
  deploy/ci/check-chart.sh
}

step_compose() {
  deploy/ci/check-compose.sh
}

steps=("$@")
((${#steps[@]})) || steps=(rules dashboard wheel image chart compose)
ci_setup
for step in "${steps[@]}"; do
  ci_log "$step"
  t0=$SECONDS
  "step_$step"
  ci_log "$step passed in $((SECONDS - t0)) s"
done
