#!/usr/bin/env bash
# Build the env server image (Dockerfile, openenv.yaml): wheels are fetched here on the host,
# so the image build needs no network. TAG overrides the tag; BASE_IMAGE the base.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
TAG=${TAG:-mentorgym/env-server:latest}
WHEELS=build/env-image/wheels
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
"$PYTHON" -m pip download -q -d "$WHEELS" pip -r scripts/env-image-requirements.txt
"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" .
grep -v '^#' scripts/env-image-requirements.txt > "$WHEELS/requirements.txt"
docker build -t "$TAG" --build-arg "BASE_IMAGE=${BASE_IMAGE:-mentorgym/base:latest}" .
echo "built $TAG"
