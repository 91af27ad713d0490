#!/usr/bin/env bash
# Makes a Debian trixie base image without a registry: debootstrap into a folder, then docker import.
# Usage: scripts/build-base-image.sh [TAG]   (default local/debian:trixie-slim)
set -euo pipefail
TAG=${1:-local/debian:trixie-slim}
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG is already here"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
  else
    echo "debootstrap is needed: sudo apt-get install debootstrap" >&2
    exit 1
  fi
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
dir=$(mktemp -d)
trap '$SUDO rm -rf "$dir"' EXIT
$SUDO debootstrap --variant=minbase trixie "$dir" http://deb.debian.org/debian
$SUDO tar -C "$dir" -c . | docker import - "$TAG"
echo "built $TAG"
