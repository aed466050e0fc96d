#!/usr/bin/env bash
# Build the env server image (Dockerfile, openenv.yaml): wheels are fetched here on the host,
# so the image build needs no network. TAG overrides the tag; BASE_IMAGE the base.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
TAG=${TAG:-mentorgym/env-server:latest}
WHEELS=build/env-image/wheels
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
BASE_IMAGE=${BASE_IMAGE:-mentorgym/base:latest}
# Wheels for the image's own Python (Debian's 3.11.2 in the offline base), not this venv's.
PYV=$(docker run --rm "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())')
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PYTHON" -m pip download -q -d "$WHEELS" --only-binary=:all: --python-version "$PYV" \
  --implementation cp "${PLATFORMS[@]}" pip -r scripts/env-image-requirements.txt
"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" .
grep -v '^#' scripts/env-image-requirements.txt > "$WHEELS/requirements.txt"
docker build -t "$TAG" --build-arg "BASE_IMAGE=$BASE_IMAGE" .
echo "built $TAG"
