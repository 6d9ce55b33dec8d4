#!/usr/bin/env bash
# Build the base image of Herald's image (Debian bookworm minbase + Python 3.11 with venv + CA
# certificates) from Debian's mirror with mmdebstrap, for hosts that reach no container registry.
# The rootfs tarball is cached under $HERALD_IMAGE_CACHE, keyed by suite and package list, so it is
# built once; `podman import` of the cached tarball takes seconds.
#
#   deploy/container/base.sh            # prints the image name, e.g. localhost/herald-base:bookworm-1a2b3c4d
set -euo pipefail

SUITE="${HERALD_BASE_SUITE:-bookworm}"
PACKAGES="python3,python3-venv,ca-certificates"
CACHE="${HERALD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-ci/base}"
KEY="$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-8)"
IMAGE="localhost/herald-base:$SUITE-$KEY"
TARBALL="$CACHE/herald-base-$SUITE-$KEY.tar"

log() { echo "base.sh: $*" >&2; }

if podman image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
if [[ ! -s "$TARBALL" ]]; then
  command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 1; }
  # The mirror apt already uses on this host (deb822 or one-line sources).
  mirror="${HERALD_DEBIAN_MIRROR:-$(sed -nE 's#^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?(https?://[^ ]+/debian/?)([[:space:]].*)?$#\3#p' \
    /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | head -1 || true)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  mkdir -p "$CACHE"
  log "building the $SUITE rootfs from $mirror (once; cached in $TARBALL)"
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    "$SUITE" "$CACHE/partial-$KEY.tar" "$mirror"
  mv "$CACHE/partial-$KEY.tar" "$TARBALL"
fi
podman import --quiet --change 'CMD ["/usr/bin/python3"]' "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE"
