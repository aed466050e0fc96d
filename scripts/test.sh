#!/usr/bin/env bash
# The test command (README, .ci/run): set up what the tests need, then run pytest.
# As root it also installs and starts a Docker engine and builds the base image, so the
# Docker tests run; elsewhere they skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# bubblewrap: the isolated sandbox where Docker is missing (tests/test_isolation.py).
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) \
      || echo "bubblewrap did not install: its tests will skip with the reason"
  else
    echo "no bwrap, and not root with apt-get: install bubblewrap, or its tests skip"
  fi
fi
if [ -f scripts/docker_up.sh ]; then
  bash scripts/docker_up.sh || echo "docker_up.sh failed: Docker tests will skip with the reason"
fi
. .venv/bin/activate
set +e
python -m pytest -p no:cacheprovider --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests"; exit 1
fi
exit "$rc"
