#!/usr/bin/env bash
# Puts the cluster's image on other swarm hosts without any registry: `docker save | ssh | docker load`.
# Swarm runs `docker-distributed-llm:local` on every node as it finds it there (deploy with
# --resolve-image never), so each host needs that tag, built for its own CPU.
#
#   scripts/swarm-images.sh copy pi@rpi5-a pi@rpi5-b ...   # each host gets the image of its architecture
#   scripts/swarm-images.sh build-arm64                     # docker-distributed-llm:local-arm64, cross-built here
#
# copy asks each host for its architecture (docker info) and sends docker-distributed-llm:local when it
# matches this machine's image, else docker-distributed-llm:local-<arch> (made by build-arm64, or
# built on such a board and saved), tagged docker-distributed-llm:local over there.
# SWARM_SSH replaces `ssh` (e.g. "ssh -p 2222", or a wrapper); IMAGE replaces the image name.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-docker-distributed-llm:local}
SSH=${SWARM_SSH:-ssh}

die() { echo "swarm-images: $*" >&2; exit 1; }

docker_arch() {  # uname-style machine -> docker platform architecture
  case "$1" in
    x86_64|amd64) echo amd64 ;;
    aarch64|arm64) echo arm64 ;;
    *) die "unsupported architecture $1: the image needs a 64-bit OS (amd64 or arm64; Debian has no torch for 32-bit ARM)" ;;
  esac
}

image_for() {  # the local image to send to a host of this architecture
  local want=$1 have
  have=$(docker image inspect -f '{{.Architecture}}' "$IMAGE" 2>/dev/null) \
    || die "no $IMAGE here: build it first (source scripts/prepare.sh && docker compose build)"
  if [ "$have" = "$want" ]; then echo "$IMAGE"; return; fi
  docker image inspect -f '{{.Architecture}}' "$IMAGE-$want" >/dev/null 2>&1 \
    || die "$IMAGE is $have but a host is $want: make $IMAGE-$want first (scripts/swarm-images.sh build-$want, or build on such a board and 'docker save' it)"
  echo "$IMAGE-$want"
}

copy() {
  [ $# -gt 0 ] || die "copy needs at least one ssh destination (user@host)"
  local host arch source
  for host in "$@"; do
    arch=$(docker_arch "$($SSH "$host" "docker info --format '{{.Architecture}}'")")
    source=$(image_for "$arch")
    echo "swarm-images: $source -> $host ($arch) as $IMAGE" >&2
    # gzip -1: the layers are mostly compressed wheels and torch; fast beats small on a LAN
    docker save "$source" | gzip -1 | $SSH "$host" "gunzip | docker load >&2 && docker tag '$source' '$IMAGE'"
  done
}

build_arch() {
  local arch=$1
  docker buildx version >/dev/null 2>&1 || die "cross-building needs docker buildx (or build on the board itself: docker compose build)"
  if ls wheels/*x86_64*.whl >/dev/null 2>&1; then
    die "wheels/ holds amd64 wheels (scripts/prepare-wheels.sh) that an $arch build cannot use: move them aside so the build uses PyPI, or build on the board"
  fi
  # QEMU runs the $arch build steps here; without it: docker run --privileged --rm tonistiigi/binfmt --install $arch
  docker buildx build --platform "linux/$arch" --target runtime \
    --build-arg BASE_IMAGE="${BASE_IMAGE:-debian:trixie-slim}" -t "$IMAGE-$arch" --load .
}

case "${1:-}" in
  copy) shift; copy "$@" ;;
  build-arm64) build_arch arm64 ;;
  build-amd64) build_arch amd64 ;;
  *) die "usage: $0 copy user@host... | build-arm64 | build-amd64" ;;
esac
