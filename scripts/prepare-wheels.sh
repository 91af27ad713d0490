#!/usr/bin/env bash
# Fetches the image's PyPI packages on the host into wheels/ (Python 3.13, the image's platform),
# for machines where containers cannot reach PyPI themselves.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$(uname -m)" in
  x86_64|amd64) arch=x86_64 ;;
  aarch64|arm64) arch=aarch64 ;;
  *) echo "unknown architecture $(uname -m)" >&2; exit 1 ;;
esac
platforms=()
for p in manylinux_2_28 manylinux_2_17 manylinux2014; do platforms+=(--platform "${p}_${arch}"); done
pip download -q -d "$REPO_ROOT/wheels" --only-binary=:all: --python-version 3.13 --implementation cp \
  "${platforms[@]}" --platform any -r "$REPO_ROOT/requirements.txt" -r "$REPO_ROOT/requirements-dev.txt"
echo "wheels ready in $REPO_ROOT/wheels"
