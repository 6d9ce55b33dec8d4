# Sourced by the deploy checks: installs and configures the tools they need, once per machine.
#   podman (runtime runc: crun cannot run on hybrid cgroup hosts), mmdebstrap (base image without a
#   registry), promtool (Debian's prometheus), helm and kube-score (built from the Go module proxy,
#   cached by version), and a tool virtualenv (podman-compose, kubernetes-validate, grafana SDK).
# shellcheck shell=bash
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
KUBE_SCORE_VERSION="${KUBE_SCORE_VERSION:-v1.20.0}"
export HERALD_CI_CACHE="${HERALD_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-ci}"
export HERALD_IMAGE_CACHE="$HERALD_CI_CACHE/base"
CI_WORK="${CI_WORK:-$PWD/build/deploy-check}"
mkdir -p "$HERALD_CI_CACHE" "$CI_WORK"

ci_log() { echo "== deploy-check: $*" >&2; }

ci_apt() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman runc uidmap slirp4netns catatonit)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    ci_log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends keeps prometheus from pulling its exporters; podman's recommends
    # (conmon, netavark, aardvark-dns, fuse-overlayfs) are needed, so it is installed first.
    apt-get install -y -qq podman runc >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ci_podman() {
  # runc, rlimits within the host's hard limits (no CAP_SYS_RESOURCE in CI containers).
  cat >"$CI_WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  export CONTAINERS_CONF="$CI_WORK/containers.conf"
}

GO_TOOLCHAIN="${GO_TOOLCHAIN:-go1.26.0}"  # helm 3.22 needs Go 1.26

ci_go() {  # print a go command: the host's, else the toolchain module from the Go proxy
  local go
  go="$(PATH="$PATH:/usr/local/go/bin" command -v go || true)"
  if [[ -n "$go" ]]; then
    echo "$go"  # GOTOOLCHAIN=auto fetches a newer toolchain from the proxy if a module needs it
    return
  fi
  local dir="$HERALD_CI_CACHE/$GO_TOOLCHAIN"
  if [[ ! -x "$dir/go/bin/go" ]]; then
    ci_log "fetching the Go toolchain $GO_TOOLCHAIN from the Go module proxy (once)"
    mkdir -p "$dir"
    curl -fsSL -o "$dir/go.zip" \
      "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-amd64.zip"
    python3 -m zipfile -e "$dir/go.zip" "$dir/unzipped"
    mv "$dir/unzipped/golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-amd64" "$dir/go"
    chmod +x "$dir"/go/bin/* "$dir"/go/pkg/tool/*/*
    rm -rf "$dir/go.zip" "$dir/unzipped"
  fi
  echo "$dir/go/bin/go"
}

ci_go_tool() {  # name version module: build once into the cache, print the binary's path
  local name="$1" version="$2" module="$3" dir="$HERALD_CI_CACHE/$1-$2"
  if [[ ! -x "$dir/$name" ]]; then
    ci_log "building $name $version from the Go module proxy (once; cached in $dir)"
    mkdir -p "$dir"
    GOTOOLCHAIN=auto GOBIN="$dir" "$(ci_go)" install -ldflags='-s -w' "$module@$version" >&2
  fi
  echo "$dir/$name"
}

ci_venv() {
  local venv="$HERALD_CI_CACHE/tools-venv" stamp
  stamp="$venv/.installed-$(sha256sum deploy/ci/requirements.txt | cut -c1-12)"
  if [[ ! -f "$stamp" ]]; then
    ci_log "tool virtualenv (deploy/ci/requirements.txt)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r deploy/ci/requirements.txt
    touch "$stamp"
  fi
  export TOOLS="$venv/bin"
}

ci_setup() {
  ci_apt
  ci_podman
  HELM="$(ci_go_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm)"
  KUBE_SCORE="$(ci_go_tool kube-score "$KUBE_SCORE_VERSION" github.com/zegl/kube-score/cmd/kube-score)"
  export HELM KUBE_SCORE HELM_CACHE_HOME="$CI_WORK/helm" HELM_CONFIG_HOME="$CI_WORK/helm" HELM_DATA_HOME="$CI_WORK/helm"
  ci_venv
}
