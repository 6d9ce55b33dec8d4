#!/usr/bin/env bash
# Chart checks (called by deploy/ci/run.sh, which sets HELM, KUBE_SCORE, TOOLS, IMAGE, PY):
# lint, schema validation for two Kubernetes versions, kube-score, and `podman kube play` of
# the embedded Deployment with a notification delivered.
set -euo pipefail
CHART=deploy/helm/herald
KUBE_VERSIONS=(1.30.0 1.34.0)
DISTRIBUTED=(--set kafka.bootstrap=kafka:9092 --set database.url=postgresql://herald:secret@postgres:5432/herald)
FULL=("${DISTRIBUTED[@]}" --set serviceMonitor.enabled=true --set prometheusRule.enabled=true
      --set grafanaDashboard.enabled=true --set matcher.autoscaling.enabled=true)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The chart follows Herald's version.
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' services/__init__.py)"
grep -q "^appVersion: \"$version\"$" "$CHART/Chart.yaml" || { echo "Chart appVersion is not $version" >&2; exit 1; }

"$HELM" lint --strict "$CHART" "${FULL[@]}"
"$HELM" lint --strict "$CHART" --set mode=embedded
for k in "${KUBE_VERSIONS[@]}"; do
  for values in distributed full embedded; do
    case "$values" in
      distributed) args=("${DISTRIBUTED[@]}") ;;
      full) args=("${FULL[@]}") ;;
      embedded) args=(--set mode=embedded) ;;
    esac
    "$HELM" template herald "$CHART" --kube-version "$k" "${args[@]}" >"$work/$values-$k.yaml"
    # ServiceMonitor and PrometheusRule are CRDs (prometheus-operator): no schema to check.
    "$TOOLS/python" - "$work/$values-$k.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
yaml.safe_dump_all(core, open(sys.argv[1] + ".core", "w"))
PY
    "$TOOLS/kubernetes-validate" -k "$k" --strict --quiet "$work/$values-$k.yaml.core"
  done
done
# Ignored kube-score checks:
#  container-image-pull-policy: the image is pinned by version tag (by digest in production,
#    docs/deployment.md); IfNotPresent spares a registry round trip on every restart, and
#    image.pullPolicy=Always is one value away for mutable tags.
#  embedded mode only: deployment-strategy and deployment-replicas, because one process owns the
#    SQLite file: a second replica, or a rolling update's surge pod, would be two writers.
#  full values only: deployment-targeted-by-hpa-does-not-have-replicas-configured, which
#    kube-score 1.20 reports although the chart omits spec.replicas under an HPA (its decoder
#    defaults the field); the Python check below asserts the omission instead.
"$KUBE_SCORE" score --exit-one-on-warning --ignore-test container-image-pull-policy \
  "$work/distributed-${KUBE_VERSIONS[0]}.yaml.core"
"$KUBE_SCORE" score --exit-one-on-warning --ignore-test container-image-pull-policy \
  --ignore-test deployment-targeted-by-hpa-does-not-have-replicas-configured \
  "$work/full-${KUBE_VERSIONS[0]}.yaml.core"
"$TOOLS/python" - "$work/full-${KUBE_VERSIONS[0]}.yaml.core" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
assert scaled, "no HorizontalPodAutoscaler rendered"
for d in docs:
    if d["kind"] == "Deployment" and d["metadata"]["name"] in scaled:
        assert "replicas" not in d["spec"], f"{d['metadata']['name']} sets replicas under an HPA"
PY
"$KUBE_SCORE" score --exit-one-on-warning --ignore-test container-image-pull-policy \
  --ignore-test deployment-strategy --ignore-test deployment-replicas \
  "$work/embedded-${KUBE_VERSIONS[0]}.yaml.core"

# podman kube play: the embedded Deployment (with its ConfigMap and Secret) on a loopback port.
port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$HELM" template herald "$CHART" --kube-version "${KUBE_VERSIONS[0]}" --set mode=embedded \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set baseUrl="http://127.0.0.1:$port/fhir" --set env.HERALD_ALLOW_PRIVATE_ENDPOINTS=true \
  --set env.HERALD_ALLOW_HTTP_ENDPOINTS=true --set auth.mode=none \
  --show-only templates/configmap.yaml --show-only templates/secret.yaml \
  --show-only templates/deployments.yaml >"$work/play.yaml"
# Only for the smoke: host networking on loopback (the receiver listens there), an emptyDir for
# the PVC, the port the receiver-side test uses, and the Secret's keys in the ConfigMap (podman
# 4.3 reads a secretRef from its own secret store, not from the played YAML).
"$TOOLS/python" - "$work/play.yaml" "$port" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secret = next(d for d in docs if d["kind"] == "Secret")
docs.remove(secret)
for d in docs:
    if d["kind"] == "ConfigMap":
        d["data"].update(secret["stringData"], HERALD_HOST="127.0.0.1", HERALD_PORT=sys.argv[2])
    if d["kind"] == "Deployment":
        container = d["spec"]["template"]["spec"]["containers"][0]
        container["envFrom"] = [e for e in container["envFrom"] if "configMapRef" in e]
        spec = d["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        del spec["containers"][0]["ports"]
        spec["volumes"] = [{"name": v["name"], "emptyDir": {}} for v in spec["volumes"]]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec["containers"][0][probe]["httpGet"]["port"] = int(sys.argv[2])
yaml.safe_dump_all(docs, open(sys.argv[1], "w"))
PY
podman kube down "$work/play.yaml" >/dev/null 2>&1 || true
podman kube play "$work/play.yaml" >/dev/null
trap 'podman kube down "$work/play.yaml" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if ! "$PY" -m tests.deploy.smoke embedded "http://127.0.0.1:$port/fhir" --ready-timeout 90; then
  podman logs "$(podman ps -a --filter name=herald-run --format '{{.Names}}' | grep -v infra | head -1)" 2>&1 | tail -n 40 >&2
  exit 1
fi
