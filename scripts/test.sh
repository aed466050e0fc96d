#!/usr/bin/env bash
# The test command (README, .ci/run): set up what the tests need, then run pytest.
# As root it also installs and starts a Docker engine and builds the base image, so the
# Docker tests run; elsewhere they skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The optional extras whose tests run in CI: the trackers (report_to) and the browser test,
# which drives Debian's chromium through Playwright (no browser is downloaded).
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[tensorboard,wandb,trackio,browser]"
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null; then
  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } ||
    echo "apt-get install chromium failed: the browser tests will skip with the reason"
fi
if [ -f scripts/docker_up.sh ]; then
  bash scripts/docker_up.sh || echo "docker_up.sh failed: Docker tests will skip with the reason"
fi
. .venv/bin/activate
# Optional extras whose tests run in CI: Ray (rollout executor) and openenv-core +
# schemathesis (env server compatibility); about 45 s of installs on a fresh machine.
python -m pip install -q -e ".[openenv,ray]" "torch==$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
set +e
python -m pytest -p no:cacheprovider --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests"; exit 1
fi
exit "$rc"
